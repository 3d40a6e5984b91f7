"""The web dashboard: one HTML page, plain ES modules and CSS (no build step), served at `/`."""

from app.dashboard.serve import mount_dashboard

__all__ = ["mount_dashboard"]
