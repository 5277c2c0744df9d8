"""`legsegnet serve`: LegSegNet in the browser (a trame app on Slicer's MRML libraries, `trame-slicer`).

This module holds what the server enforces — where it binds, the access token, which files it reads — and starts
the page (serve_app.py). trame and aiohttp are imported only when the server starts, so the core stays importable
without the `web` extra.
"""
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from .errors import InputError
from .volumes import is_image_file

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
UPLOAD_LIMIT_MB = 1024          # one CT file; a DICOM series is served from --data as a folder
TOKEN_COOKIE = "legsegnet_token"
WEB_EXTRA_HINT = "the web page needs the web extra: pip install 'legsegnet[web]'"


def is_local(host):
    """True for loopback addresses and 'localhost' (nothing else on the network can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_token(host, token=None):
    """The token requests must carry: the one given, a new random one for a non-local host, else None."""
    if token is not None:
        if len(token) < 16:
            raise InputError("--token must be at least 16 characters")
        return token
    return None if is_local(host) else secrets.token_urlsafe(24)


def page_url(host, port, token=None):
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/index.html" + (f"?token={token}" if token else "")


def token_middleware(token):
    """aiohttp middleware refusing (403) every request that carries neither `?token=` nor the cookie the first
    valid request set (the page's scripts and its websocket then carry the cookie)."""
    from aiohttp import web

    def valid(value):
        return bool(value) and hmac.compare_digest(value.encode(), token.encode())

    @web.middleware
    async def check_token(request, handler):
        from_query = valid(request.query.get("token"))
        if not (from_query or valid(request.cookies.get(TOKEN_COOKIE))):
            return web.Response(status=403, text="403: this LegSegNet server needs its access token in the URL\n")
        response = await handler(request)
        if from_query and isinstance(response, web.StreamResponse) and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return check_token


# ---------------------------------------------------------------- files from --data
def data_folder(path):
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"--data {path}: not a folder")
    return folder.resolve()


def list_cases(folder):
    """CTs the page offers: image files (NIfTI/NRRD/MHA) and folders holding files (DICOM series) inside the
    folder, by their path relative to it. Links leading outside the folder are left out."""
    cases = []
    for root, dirs, files in os.walk(folder):
        root = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _inside(folder, root / d))
        images = [f for f in files if is_image_file(f) and _inside(folder, root / f)]
        cases += [(root / f).relative_to(folder).as_posix() for f in sorted(images)]
        others = [f for f in files if not is_image_file(f) and not f.startswith(".")]
        if others and root != folder and not images:
            cases.append(root.relative_to(folder).as_posix() + "/")
    return sorted(cases)


def case_path(folder, name):
    """The file or folder a page request names, only if it is one of list_cases (so never outside the folder)."""
    if name not in list_cases(folder):
        raise InputError(f"'{name}' is not a CT in the served folder")
    path = (folder / name).resolve()
    if not _inside(folder, path):
        raise InputError(f"'{name}' is outside the served folder")
    return path


def _inside(folder, path):
    try:
        Path(path).resolve().relative_to(folder)
        return True
    except (ValueError, OSError):
        return False


# ---------------------------------------------------------------- start
def serve(data=".", host=DEFAULT_HOST, port=DEFAULT_PORT, token=None, upload_limit_mb=UPLOAD_LIMIT_MB,
          open_browser=False):
    """Build the page and serve it until interrupted; prints the URL (with the token) first."""
    folder = data_folder(data)
    token = access_token(host, token)
    try:
        from .serve_app import LegSegNetWebApp
    except ImportError as err:
        raise InputError(f"{WEB_EXTRA_HINT} ({err})") from None
    app = LegSegNetWebApp(folder, upload_limit_mb=upload_limit_mb)
    if token:
        app.server.controller.on_server_bind.add(lambda web_server: web_server.app.middlewares.append(
            token_middleware(token)))
    print(f"LegSegNet: serving {folder} at {page_url(host, port, token)}", flush=True)
    if not is_local(host):
        print("LegSegNet: the token in this URL is the only key to the page; share it only with its users",
              flush=True)
    app.server.start(host=host, port=port, open_browser=open_browser, show_connection_info=False,
                     disable_logging=True)
