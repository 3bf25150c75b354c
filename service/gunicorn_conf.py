"""gunicorn settings shared by every way Tuneline's API is started (``make run``, docker compose,
the tests' stacks, the benchmarks): ``gunicorn -c python:service.gunicorn_conf --bind ADDR
--workers N service.wsgi:app``. Flags given beside ``-c`` win over these."""

worker_class = "gthread"
threads = 4
timeout = 120

# An idle keep-alive connection is kept longer than clients and proxies keep theirs (httpx, which
# the openai SDK uses: 5 s; nginx and AWS ALB: 60 s), so the client is always the side that
# closes it. With gunicorn's default of 2 s the server closed connections a client still held,
# and a request sent on one just then failed with "Server disconnected without sending a response".
keepalive = 75
