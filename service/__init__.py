"""The service layer: the only thing the surfaces (CLI, HTTP API, console, lab) call.

Typed operations over the cases, typed inputs checked once (`inputs`, `values`, `currencies`,
`loan_file`), and errors typed by kind (`errors`), which each surface maps once to its own codes.
"""
