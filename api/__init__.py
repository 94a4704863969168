"""The Customer 360 REST API: FastAPI over the business views of the warehouse.

``api.main:app`` is the ASGI application; ``c360 api serve`` runs it with uvicorn.
"""
