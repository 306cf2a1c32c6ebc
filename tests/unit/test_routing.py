"""The route table (fastproxy/routing.py), without a server: patterns in, (method, path) bytes in,
decisions out. Values registered are plain strings naming the route so a wrong match reads well.
"""

import pytest

from fastproxy.routing import METHOD_NOT_ALLOWED, NOT_FOUND, PatternError, RouteTable, parse_pattern

# One table for the matching cases: (method, endpoint pattern). The value stored is "METHOD pattern".
ROUTES = [
    ("GET", "/"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/users/me"),
    ("GET", "/users/{id}"),
    ("DELETE", "/users/{id}"),
    ("GET", "/users/{id}/orders/{order}"),
    ("PUT", "/users/{id}/orders/{order}"),
    ("GET", "/files/*"),
    ("GET", "/files/readme"),
    ("GET", "/files/{name}/raw"),
    ("PUT", "/items/{item}"),
    ("GET", "/items/special"),
    ("GET", "/shop/{cat}/list"),
    ("POST", "/shop/{cat}/{action}"),
    ("GET", "/static/*"),
    ("POST", "/static/{file}"),
]


@pytest.fixture(scope="module")
def table() -> RouteTable:
    t = RouteTable()
    for method, pattern in ROUTES:
        t.add(pattern, method, f"{method} {pattern}")
    return t


# (method, path, expected route, expected params, expected rest)
MATCHES = [
    # static paths: one dict lookup, no params
    ("GET", "/", "GET /", None, None),
    ("GET", "/users", "GET /users", None, None),
    ("POST", "/users", "POST /users", None, None),
    # {param} segments, raw bytes, nothing decoded
    ("GET", "/users/42", "GET /users/{id}", {"id": b"42"}, None),
    ("DELETE", "/users/42", "DELETE /users/{id}", {"id": b"42"}, None),
    ("GET", "/users/a%2Fb", "GET /users/{id}", {"id": b"a%2Fb"}, None),
    ("GET", "/users/7/orders/9", "GET /users/{id}/orders/{order}", {"id": b"7", "order": b"9"}, None),
    ("PUT", "/users/7/orders/9", "PUT /users/{id}/orders/{order}", {"id": b"7", "order": b"9"}, None),
    # a literal beats a parameter
    ("GET", "/users/me", "GET /users/me", None, None),
    ("GET", "/files/readme", "GET /files/readme", None, None),
    # a parameter beats the catch-all
    ("GET", "/files/doc/raw", "GET /files/{name}/raw", {"name": b"doc"}, None),
    # trailing /* takes the rest of the path, without its leading slash
    ("GET", "/files/a", "GET /files/*", {}, b"a"),
    ("GET", "/files/a/b/c.txt", "GET /files/*", {}, b"a/b/c.txt"),
    ("GET", "/files/doc/raw/more", "GET /files/*", {}, b"doc/raw/more"),
    ("GET", "/files/", "GET /files/*", {}, b""),
    # a literal that does not lead to a route falls back to the parameter
    ("GET", "/shop/books/list", "GET /shop/{cat}/list", {"cat": b"books"}, None),
    ("POST", "/shop/books/list", "POST /shop/{cat}/{action}", {"cat": b"books", "action": b"list"}, None),
    # GET answers HEAD, for static, param and catch-all routes
    ("HEAD", "/users", "GET /users", None, None),
    ("HEAD", "/users/42", "GET /users/{id}", {"id": b"42"}, None),
    ("HEAD", "/files/x/y", "GET /files/*", {}, b"x/y"),
    # a static path without the method is served by a parameter route that has it
    ("PUT", "/items/special", "PUT /items/{item}", {"item": b"special"}, None),
    ("DELETE", "/users/me", "DELETE /users/{id}", {"id": b"me"}, None),
    ("POST", "/static/app.js", "POST /static/{file}", {"file": b"app.js"}, None),
    ("GET", "/static/app.js", "GET /static/*", {}, b"app.js"),
]


@pytest.mark.parametrize("method,path,route,params,rest", MATCHES, ids=[f"{m} {p}" for m, p, *_ in MATCHES])
def test_path_matches_the_expected_route_with_its_params_and_rest(table, method, path, route, params, rest):
    assert table.match(method.encode(), path.encode()) == (route, params, rest)


# (method, path, allowed methods) for paths that exist with other methods: 405
NOT_ALLOWED = [
    ("PUT", "/users", {"GET", "HEAD", "POST"}),
    ("POST", "/users/42", {"GET", "HEAD", "DELETE"}),
    ("DELETE", "/users/7/orders/9", {"GET", "HEAD", "PUT"}),
    ("POST", "/files/a/b", {"GET", "HEAD"}),
    # the static route and the parameter route both count in Allow
    ("POST", "/items/special", {"GET", "HEAD", "PUT"}),
    ("POST", "/users/me", {"GET", "HEAD", "DELETE"}),
    ("DELETE", "/static/app.js", {"GET", "HEAD", "POST"}),
]


@pytest.mark.parametrize("method,path,allowed", NOT_ALLOWED, ids=[f"{m} {p}" for m, p, _ in NOT_ALLOWED])
def test_path_known_for_other_methods_is_405_with_every_allowed_method(table, method, path, allowed):
    value, methods, rest = table.match(method.encode(), path.encode())
    assert value is METHOD_NOT_ALLOWED
    assert {m.decode() for m in methods} == allowed
    assert rest is None


NOT_FOUND_PATHS = [
    "/nope",
    "/users/42/extra",
    "/users/7/orders",
    "/users/",  # a parameter never matches an empty segment
    "/Users",  # paths are case-sensitive
    "/shop/books",
    "/items",
]


@pytest.mark.parametrize("path", NOT_FOUND_PATHS)
def test_unknown_path_is_404_whatever_the_method(table, path):
    for method in (b"GET", b"POST"):
        assert table.match(method, path.encode()) == (NOT_FOUND, None, None)


def test_root_catch_all_takes_every_path_no_other_route_takes():
    t = RouteTable()
    t.add("/*", "GET", "all")
    t.add("/api/{v}", "GET", "api")
    assert t.match(b"GET", b"/") == ("all", {}, b"")
    assert t.match(b"GET", b"/a/b") == ("all", {}, b"a/b")
    assert t.match(b"GET", b"/api/1") == ("api", {"v": b"1"}, None)
    assert t.match(b"GET", b"/api/1/2") == ("all", {}, b"api/1/2")


def test_explicit_head_endpoint_wins_over_the_head_of_get_in_either_order():
    for order in (["GET", "HEAD"], ["HEAD", "GET"]):
        for pattern in ("/h", "/h/{id}", "/h/*"):
            t = RouteTable()
            for method in order:
                t.add(pattern, method, method)
            path = pattern.replace("{id}", "1").replace("*", "x").encode()
            assert t.match(b"HEAD", path)[0] == "HEAD", (order, pattern)
            assert t.match(b"GET", path)[0] == "GET", (order, pattern)


def test_method_names_are_case_insensitive_when_added():
    t = RouteTable()
    t.add("/a", "post", "p")
    assert t.match(b"POST", b"/a") == ("p", None, None)


DUPLICATES = [
    (("/a", "GET"), ("/a", "GET"), "GET /a is defined twice"),
    (("/a", "GET"), ("/a", "get"), "GET /a is defined twice"),
    (("/a/{id}", "POST"), ("/a/{id}", "POST"), "POST /a/{id} is defined twice"),
    (("/a/*", "GET"), ("/a/*", "GET"), "GET /a/* is defined twice"),
    (("/a", "HEAD"), ("/a", "HEAD"), "HEAD /a is defined twice"),
]


@pytest.mark.parametrize("first,second,message", DUPLICATES, ids=[m for *_, m in DUPLICATES])
def test_same_method_and_pattern_twice_is_rejected(first, second, message):
    t = RouteTable()
    t.add(*first, "first")
    with pytest.raises(PatternError) as exc:
        t.add(*second, "second")
    assert str(exc.value) == message
    assert t.match(first[1].upper().encode(), first[0].replace("{id}", "1").replace("*", "x").encode())[0] == "first"


def test_same_pattern_with_other_method_is_not_a_duplicate():
    t = RouteTable()
    t.add("/a/{id}", "GET", "g")
    t.add("/a/{id}", "POST", "p")
    assert t.match(b"POST", b"/a/1")[0] == "p"
    assert t.match(b"GET", b"/a/1")[0] == "g"


CONFLICTS = [
    ("/users/{id}", "/users/{name}", "{name}", "{id}"),
    ("/a/{x}/b", "/a/{y}/c", "{y}", "{x}"),
    ("/a/{x}/*", "/a/{y}", "{y}", "{x}"),
]


@pytest.mark.parametrize("first,second,new,old", CONFLICTS)
def test_different_param_names_at_the_same_position_are_rejected(first, second, new, old):
    t = RouteTable()
    t.add(first, "GET", "first")
    with pytest.raises(PatternError) as exc:
        t.add(second, "POST", "second")
    assert f"parameter {new} conflicts with {old} at the same position" in str(exc.value)


BAD_PATTERNS = [
    ("users", "expected a path starting with '/', found 'users'"),
    ("", "expected a path starting with '/', found ''"),
    ("/a/{id", "expected a literal segment or a whole '{param}' segment, found '{id' in '/a/{id'"),
    ("/a/id}", "expected a literal segment or a whole '{param}' segment, found 'id}' in '/a/id}'"),
    ("/a/x{id}", "expected a literal segment or a whole '{param}' segment, found 'x{id}' in '/a/x{id}'"),
    ("/a/{}", "expected a literal segment or a whole '{param}' segment, found '{}' in '/a/{}'"),
    ("/a*", "expected a literal segment or a whole '{param}' segment, found 'a*' in '/a*'"),
    ("/a/*/b", "expected '*' only as the last segment ('/*'), found it in the middle of '/a/*/b'"),
    ("/a/{1x}", "expected a parameter name of letters, digits and '_' (not starting with a digit), found {1x}"),
    ("/a/{a-b}", "expected a parameter name of letters, digits and '_' (not starting with a digit), found {a-b}"),
    ("/a/{id}/b/{id}", "expected distinct parameter names, found {id} twice in '/a/{id}/b/{id}'"),
]


@pytest.mark.parametrize("pattern,message", BAD_PATTERNS, ids=[p or "empty" for p, _ in BAD_PATTERNS])
def test_bad_pattern_is_rejected_saying_what_was_expected_and_found(pattern, message):
    with pytest.raises(PatternError) as exc:
        parse_pattern(pattern)
    assert str(exc.value) == message
    with pytest.raises(PatternError):
        RouteTable().add(pattern, "GET", "x")


GOOD_PATTERNS = [
    ("/", [], False),
    ("/*", [], True),
    ("/a/b", [(False, "a"), (False, "b")], False),
    ("/a/{id}", [(False, "a"), (True, "id")], False),
    ("/a/{id}/*", [(False, "a"), (True, "id")], True),
    ("/v1/{user_id}/x", [(False, "v1"), (True, "user_id"), (False, "x")], False),
]


@pytest.mark.parametrize("pattern,segments,wildcard", GOOD_PATTERNS)
def test_pattern_splits_into_literal_and_param_segments(pattern, segments, wildcard):
    assert parse_pattern(pattern) == (segments, wildcard)


def test_static_routes_are_a_single_dict_lookup():
    t = RouteTable()
    t.add("/a/b", "GET", "static")
    t.add("/a/{x}", "GET", "param")
    assert t.static[b"/a/b"][b"GET"] == "static"
    assert b"/a/{x}" not in t.static
