"""FinCart sync: live orders over WebSocket (snapshot + gap-free resume), read API, live page."""
