"""Everything that speaks RESP: the key schema, the Lua scripts, our connection, client links."""
