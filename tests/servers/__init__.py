"""Real-server harness: run nginx/uWSGI/gunicorn/Flask on 127.0.0.1, provoke 502/504s."""
