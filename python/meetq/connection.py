"""Deprecated import path (one release): `meetq._redis.connection` holds these now."""

from meetq._redis.connection import ConnectionSettings, RespConnection, RespScript

__all__ = ["ConnectionSettings", "RespConnection", "RespScript"]
