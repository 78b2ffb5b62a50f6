"""The web UI: server-rendered pages with HTMX for live parts."""
