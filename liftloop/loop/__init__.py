"""The campaign loop's stages, one module each — segment, decide, generate, guard, approvals,
send, simulate, measure — with the spec, the stage payloads and the loop's tables beside them.

Each stage is a class whose constructor takes what it needs (an engine, policies, senders) and
whose methods are the Temporal activities; the worker (`liftloop.temporal`) builds them and the
workflow (`workflows.campaign_loop`) calls them by typed reference."""
