"""The RPC logic of MovieService, written against the small Cache and Store interfaces."""
