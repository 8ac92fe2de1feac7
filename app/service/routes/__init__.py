"""The API's routers, one per resource; auth and the shared state come from app.service.deps."""
