"""Routing and per-team policies: catalogue, team policy files, service_tier, router, limits and
budgets, circuit breaking, usage, explain. The file formats and semantics are in docs/policies.md.

Import from the modules (this package imports nothing itself: ``proxy.settings`` imports
``policies.rules`` to type its ``policy`` section, so importing more here would be circular).

Start-up (per worker, in the app lifespan)::

    from policies.gate import Gate
    from policies.teams import PolicyError, PolicyStore

    store = PolicyStore.open(config_path, simulator_url=...)   # or PolicyStore(settings, ...)
    gate = Gate.open(store)          # limits + circuits where ``limits_store`` says
    gate.start()                     # reload on SIGHUP and file change; refresh circuits
    ...
    await gate.close()

``PolicyStore.open`` raises ``PolicyError`` (``.errors``: ``file:path: reason`` each) on an
invalid config or team file. Later, ``store.reload()`` returns those errors and keeps the old
snapshot; ``store.current`` is the ``Snapshot`` in force (``.catalogue``, ``.keyring``,
``.policy(principal)``). Take ``store.current`` once per request.

Per request (``Engine.prepare``/``open``)::

    principal = store.current.keyring.authenticate(authorization)
    ticket = await gate.admit(principal, request, input_tokens=len(raw) // 4)
        # raises 403 (model/tier/store not allowed, no allowed deployment), 404, 400 (context,
        # capability), 429 RateLimited naming the limit with retry_after, 503 (every circuit
        # open, or limits unreachable under fail_mode: closed). ONE Redis round trip.
    ticket.decision.store            # -> resource.store
    ticket.decision.max_tool_calls   # the tool loop's ceiling; policy.allows_tool(name)
    for candidate in ticket.route.candidates:        # in order
        candidate.deployment         # hand to the adapter: native_tier and tier timeouts set
        candidate.max_wait_s         # flex: wait up to this for a 429/503 retry-after
        await gate.report(candidate, ok)              # each attempt: False on 5xx/timeout/429
    reported = opened.builder.served_tier   # what the upstream said, or None; NOT
                                            # resource.service_tier, which starts as the request's
    resource.service_tier = served_tier(candidate.spec, candidate.tier, reported)  # policies.tiers
    record = await gate.settle(ticket, candidate, resource.usage, reported_tier=reported,
                               response_id=resource.id)   # after the response, always once
                                                          # (candidate None, Usage() if none answered)

Admin::

    await gate.usage(team, start, end, limit=1000)       # usage records (GET admin endpoint)
    await explain(store.current, body, team=T, key=None, limits=gate.limits,
                  circuits=gate.circuits.state)           # policies.explain; POST /v1/policy/explain
    await explain_files(config, request_file, team=T)     # interlock explain --config --team --request

Modules: ``rules`` (file vocabulary), ``resolve`` (key > team > global), ``teams`` (files,
snapshot, store), ``catalogue``, ``tiers``, ``router``, ``circuit``, ``limits`` (+ ``limits_redis``),
``backend`` (Redis URLs and keys), ``gate``, ``explain``.
"""
