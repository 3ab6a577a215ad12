"""The wire contract every part agrees on: names, messages, activity inputs and outputs, the
policy model.

No I/O, and nothing of the project's own is imported here: workflows, activities, the service and
every surface import this package; it imports none of theirs.
"""
