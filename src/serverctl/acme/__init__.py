"""TLS certificates through ACME (Let's Encrypt or any RFC 8555 CA), DNS-01 only.

`settings.AcmeSettingsService` keeps the directory, contact, CA bundle, check servers and the
account (key encrypted at rest); `client.AcmeClient.issue` runs one order through a pool's DNS
provider; `dns01` sets nothing itself, it only tells when a TXT value is visible.
"""

from serverctl.acme.client import AcmeClient, AcmeError, Issued
from serverctl.acme.settings import AcmeSettings, AcmeSettingsService

__all__ = ["AcmeClient", "AcmeError", "AcmeSettings", "AcmeSettingsService", "Issued"]
