"""Who is calling, and what they may do: principals, roles, API keys, OIDC tokens, and the
checks every route goes through."""
