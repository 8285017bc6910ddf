"""Task dispatch across services: routes, the dispatcher, the service worker."""

from meetq.dispatch.dispatcher import TaskDispatcher
from meetq.dispatch.routes import RouteTable
from meetq.dispatch.types import ServiceRoute, TaskRequest, TaskResponse, TaskStatus, TaskType
from meetq.dispatch.worker import ServiceWorker

__all__ = [
    "RouteTable",
    "ServiceRoute",
    "ServiceWorker",
    "TaskDispatcher",
    "TaskRequest",
    "TaskResponse",
    "TaskStatus",
    "TaskType",
]
