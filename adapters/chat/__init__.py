"""Chat: the client-session channel code the web widget and the mobile app share.

`protocol` the message body, catch-up and socket frames both speak (pure), `sessions` the
signed sessions and verified logins, `routes` the handlers both channels route to
(sessions, messages in, catch-up, link tokens), `socket` the live WebSocket. Not a
channel itself: `adapters.web` and `adapters.mobile` are.
"""
