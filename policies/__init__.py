"""Collection policies and contact rule packs: the TOML files, the loader that reads them, and the
pure rule evaluation (windows and caps) that the workflow, the contact-cap activity and the service
all apply the same way. `compliance` is pure and safe in workflow code; `loader` reads files.
"""
