"""The web console for agents and operators: server-rendered pages over `service/`."""
