"""The worker process of a host: an aiohttp app on the supervisor's socket.

``worker.worker_main`` is what the supervisor runs in each forked child;
``app.make_app`` builds the HTTP app (public API, peer API, metrics) and is
usable on its own; ``groups.build_groups`` turns the config into Groups over
the shared arena; ``errors`` is the one place errors become HTTP answers.
"""
