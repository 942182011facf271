"""HTTP surface: JSON API, UI pages, static assets."""
