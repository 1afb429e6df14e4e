"""The worker process of a host: the data plane and the admin app on the supervisor's sockets.

``worker.worker_main`` is what the supervisor runs in each forked child;
``dataplane`` is the lean HTTP/1.1 server of ``/api``, the peer API and
``/healthz``; ``app.make_admin_app`` builds the aiohttp admin app
(``/metrics``, ``/stats``, ``/cluster``, ``/healthz``); ``groups.build_groups``
turns the config into Groups over the shared arena; ``errors`` and
``routes`` give the admin app's errors their JSON shape.
"""
