"""HTTP routes: responses, models, health."""
