"""Which service queue a task type goes to: the dispatcher's route table."""

from __future__ import annotations

import dataclasses

from meetq.dispatch.types import ServiceRoute, default_routes
from meetq.errors import NoRouteError


class RouteTable:
    """Routes by service name; each task type maps to the route that named it last."""

    def __init__(self, routes: list[ServiceRoute] | None = None) -> None:
        self._routes: dict[str, ServiceRoute] = {}
        self._by_type: dict[str, ServiceRoute] = {}
        for route in default_routes() if routes is None else routes:
            self.register(route)

    def register(self, route: ServiceRoute) -> None:
        """Adds `route`, replacing a route of the same service name."""
        route = dataclasses.replace(route, task_types=list(route.task_types))
        self._routes[route.service_name] = route
        self._reindex()

    def remove(self, service_name: str) -> bool:
        """Removes the route of `service_name`; False when there is none."""
        if self._routes.pop(service_name, None) is None:
            return False
        self._reindex()
        return True

    def routes(self) -> list[ServiceRoute]:
        """Copies of the routes, in registration order."""
        return [
            dataclasses.replace(r, task_types=list(r.task_types)) for r in self._routes.values()
        ]

    def route_for(self, task_type: str) -> ServiceRoute:
        route = self._by_type.get(str(task_type))
        if route is None:
            raise NoRouteError(f"no route for task type {str(task_type)!r}")
        return route

    def queues(self) -> list[str]:
        return list(dict.fromkeys(r.queue_name for r in self._routes.values()))

    def _reindex(self) -> None:
        self._by_type = {t: r for r in self._routes.values() for t in r.task_types}
