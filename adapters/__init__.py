"""The channels, one folder each (`adapters/<name>/`: protocol, routes, sender, config),
listed in `adapters.registry`; `adapters.chat` is the client-session code the web widget
and the mobile app share. The seam they implement is the core's `omni.channel`."""
