"""Model formats and the models eventml serves."""
