"""One module per resource and audience; each route names the roles it allows."""
