"""The API's routes, one module per resource."""

from streams.ingress.routes import admin, ops, requests, tenants

__all__ = ["admin", "ops", "requests", "tenants"]
