"""Request-admission policies: client-IP resolution, CIDR tables, IP filter, bot detector,
GeoIP lookup and geofence.

Everything here is a plain object compiled once from config (constructors validate and raise
``ValueError`` naming the bad value) and queried per request without I/O; only ``geo`` reads a
file, once, when it is built.
"""
