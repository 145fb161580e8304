"""This host's nginx, uWSGI and gunicorn configuration: read it, map a failing request to
the block that handled it, and change it as a diff the servers accept.

Reading never raises for what it cannot see; each result carries ``problems`` (path and
reason). Changes are planned (a :class:`Plan` with the unified diff and one sentence per
edit), checked by the real servers on a copy (:func:`check_nginx`, :func:`check_uwsgi`)
and only then applied (:func:`apply_nginx`, :func:`apply_plan`).
"""

from gw502d.remediate.hostconf.apply import Applied, apply_nginx, apply_plan, nginx_test
from gw502d.remediate.hostconf.change import FileChange, Plan
from gw502d.remediate.hostconf.gunicornconf import (
    GunicornConfig,
    GunicornEdit,
    gunicorn_masters,
    plan_gunicorn,
    read_gunicorn,
)
from gw502d.remediate.hostconf.nginxedit import NginxEdit, plan_nginx
from gw502d.remediate.hostconf.nginxmap import (
    Handler,
    Match,
    NginxConfig,
    Setting,
    default_value,
    normalize_uri,
    setting,
)
from gw502d.remediate.hostconf.nginxmodel import Listen, Location, Pass, Server, UpstreamBlock
from gw502d.remediate.hostconf.nginxread import NginxFiles, Statement, read_nginx
from gw502d.remediate.hostconf.result import Unreadable, Where
from gw502d.remediate.hostconf.uwsgiconf import (
    Option,
    UwsgiConfig,
    UwsgiEdit,
    plan_uwsgi,
    read_uwsgi,
    uwsgi_masters,
)
from gw502d.remediate.hostconf.validate import check_nginx, check_uwsgi

__all__ = [
    "Applied", "FileChange", "GunicornConfig", "GunicornEdit", "Handler", "Listen",
    "Location", "Match", "NginxConfig", "NginxEdit", "NginxFiles", "Option", "Pass", "Plan",
    "Server", "Setting", "Statement", "Unreadable", "UpstreamBlock", "UwsgiConfig",
    "UwsgiEdit", "Where", "apply_nginx", "apply_plan", "check_nginx", "check_uwsgi",
    "default_value", "gunicorn_masters", "nginx_test", "normalize_uri", "plan_gunicorn",
    "plan_nginx", "plan_uwsgi", "read_gunicorn", "read_nginx", "read_uwsgi", "setting",
    "uwsgi_masters",
]
