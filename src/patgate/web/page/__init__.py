"""The token web page at ``/_patgate/`` and its session cookie."""
