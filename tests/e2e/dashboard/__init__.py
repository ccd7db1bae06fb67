"""The dashboard in a real browser (DESIGN §9, issue 15)."""
