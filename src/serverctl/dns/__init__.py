"""DNS providers: one interface (`base.DNSProvider`), built-ins, and a registry by kind.

Providers know only their remote service: no database, no pools. The rules hand them plain
values (zone, record name, address) and get records or `ProviderError`s back.
"""
