"""The demo network and its cases, walked through the real application."""
