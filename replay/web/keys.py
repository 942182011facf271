"""Typed keys for what the aiohttp application carries."""

from aiohttp import web

from replay.service import Service

SERVICE = web.AppKey("service", Service)
