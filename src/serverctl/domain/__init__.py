"""The rules: health, pools and members, agents, operators. No HTTP and no pages in here."""
