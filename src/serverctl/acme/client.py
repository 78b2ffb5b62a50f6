"""One ACME order, DNS-01 through a pool's DNS provider, with the `acme` library (certbot's).

    issued = AcmeClient(settings).issue(provider, "example.com", csr_pem)
    issued.chain_pem, issued.not_after

The flow: the account (made and registered on first use, reused after), a new order for the
CSR's names, one `_acme-challenge.<name>` TXT value per pending authorization set through the
provider (TTL 60), a wait until the values are visible (dns01), the answers, the CA's
validation, finalization, the full chain. The TXT values it set are removed in every case, in
`finally`. One attempt: nothing here retries a failed order (Let's Encrypt counts failed
validations; the caller decides when to try again, after `retry_after` for a rate limit).

Everything that goes wrong is an `AcmeError` whose message carries the CA's own words (its
problem document's `detail` and `type`) or the DNS provider's.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from acme import challenges, client, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from serverctl import __version__
from serverctl.acme import dns01
from serverctl.acme.settings import AcmeAccount, AcmeSettings, AcmeSettingsService
from serverctl.dns import names
from serverctl.dns.base import DNSProvider
from serverctl.errors import ProviderError, ServerCTLError, ValidationError

log = logging.getLogger(__name__)

CHALLENGE_TTL = 60
ORDER_TIMEOUT_S = 180.0
NETWORK_TIMEOUT_S = 30
RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"
T = TypeVar("T")


class AcmeError(ServerCTLError):
    """An order that failed. `acme_type` and `detail` are the CA's problem document when the CA
    said no (None for a DNS or network failure); `retry_after` is in seconds when it said."""

    status_code = 502

    def __init__(
        self,
        message: str,
        *,
        acme_type: str | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.acme_type = acme_type
        self.detail = detail
        self.retry_after = retry_after

    @property
    def rate_limited(self) -> bool:
        return self.acme_type == RATE_LIMITED


@dataclass(frozen=True)
class Issued:
    chain_pem: str
    not_after: datetime.datetime  # UTC
    serial: str  # hex
    names: tuple[str, ...]
    # What is left behind when removing a TXT value failed after the certificate was issued.
    cleanup_error: str | None = None


class AcmeClient:
    def __init__(
        self,
        settings: AcmeSettingsService,
        *,
        visible_timeout: float = dns01.VISIBLE_TIMEOUT_S,
        poll_interval: float = dns01.POLL_INTERVAL_S,
        order_timeout: float = ORDER_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.visible_timeout = visible_timeout
        self.poll_interval = poll_interval
        self.order_timeout = order_timeout

    def issue(
        self,
        provider: DNSProvider,
        zone: str,
        csr_pem: str | bytes,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> Issued:
        """Run one order for the CSR's names (all inside `zone`) and return the full chain."""
        say = progress or (lambda text: log.info("%s", text))
        config = self.settings.load()
        csr = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        zone = names.normalise_zone(zone)
        wanted = csr_names(csr, zone)
        with _trust(config) as verify:
            acme, net = self._connect(config, verify)
            order = _ca(lambda: self._new_order(acme, csr), net)
            say(f"order placed with {config.directory_url} for {', '.join(wanted)}")
            created: list[dns01.Challenge] = []
            failure: BaseException | None = None
            try:
                self._authorize(acme, net, provider, zone, config, order, created, say)
                deadline = _deadline(self.order_timeout)
                order = _ca(lambda: acme.finalize_order(order, deadline), net)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                left = _clean_up(provider, zone, created)
                if left and failure is not None:
                    _add_cleanup(failure, left)
        if not order.fullchain_pem:
            raise AcmeError("the CA finished the order but returned no certificate")
        issued = _issued(order.fullchain_pem, left)
        say(f"certificate issued: serial {issued.serial}, valid until {issued.not_after:%Y-%m-%d}")
        return issued

    # -- steps ----------------------------------------------------------------------------------

    def _connect(self, config: AcmeSettings, verify: str | bool) -> tuple[client.ClientV2, _Net]:
        """The client on the configured directory, with the account registered (once)."""
        with self.settings.account_lock:
            account = self.settings.account()
            net = _Net(_jwk(account), verify)
            directory = _ca(lambda: client.ClientV2.get_directory(config.directory_url, net), net)
            acme = client.ClientV2(directory, net)
            if account.url:
                net.account = messages.RegistrationResource(
                    uri=account.url, body=messages.Registration()
                )
            else:
                self._register(acme, account, config)
        return acme, net

    def _register(self, acme: client.ClientV2, account: AcmeAccount, config: AcmeSettings) -> None:
        registration = messages.NewRegistration.from_data(
            email=config.email, terms_of_service_agreed=True
        )

        def register() -> messages.RegistrationResource:
            try:
                return acme.new_account(registration)
            except acme_errors.ConflictError as known:
                # The CA knows this key already (a registration whose URL was not kept).
                regr = messages.RegistrationResource(
                    uri=known.location, body=messages.Registration()
                )
                acme.net.account = regr
                return regr

        regr = _ca(register, acme.net)
        if not regr.uri:
            raise AcmeError("the CA registered the account but gave no account URL")
        self.settings.save_account_url(account, regr.uri)
        log.info("ACME account registered at %s", regr.uri)

    def _new_order(self, acme: client.ClientV2, csr: bytes) -> messages.OrderResource:
        try:
            return acme.new_order(csr)
        except messages.Error as exc:
            if exc.code != "accountDoesNotExist":
                raise
        # The CA forgot the account (deactivated, or a test CA restarted): register the same
        # key again and place the order once; the order itself was never made.
        log.warning("the CA does not know the stored ACME account; registering it again")
        config = self.settings.load()
        with self.settings.account_lock:
            acme.net.account = None
            self._register(acme, self.settings.account(), config)
        return acme.new_order(csr)

    def _authorize(
        self,
        acme: client.ClientV2,
        net: _Net,
        provider: DNSProvider,
        zone: str,
        config: AcmeSettings,
        order: messages.OrderResource,
        created: list[dns01.Challenge],
        say: Callable[[str], None],
    ) -> None:
        """Publish, wait, answer: every pending authorization's dns-01 challenge. Appends each
        TXT value to `created` before setting it, so the caller removes all it may have set."""
        assert net.key is not None
        pending: list[tuple[messages.ChallengeBody, challenges.ChallengeResponse]] = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # the CA still holds a valid authorization for this name
            name = str(authz.body.identifier.value)
            challb = _dns01(authz, name)
            assert isinstance(challb.chall, challenges.DNS01)
            response, value = challb.chall.response_and_validation(net.key)
            record = challb.chall.validation_domain_name(name)
            created.append(dns01.Challenge(record, value))
            try:
                provider.set_txt(zone, record, value, CHALLENGE_TTL)
            except ProviderError as exc:
                raise AcmeError(
                    f"the DNS provider could not set {record} TXT: {exc.message}"
                ) from exc
            pending.append((challb, response))
        if not pending:
            say("every name is already authorized: no challenge to answer")
            return
        say(f"TXT set at {', '.join(c.record for c in created)}; waiting until it is visible")
        try:
            servers = dns01.servers_to_check(provider, zone, config.check_servers)
            seen = dns01.wait_until_visible(
                provider,
                zone,
                created,
                servers,
                timeout=self.visible_timeout,
                interval=self.poll_interval,
            )
        except dns01.NotVisible as exc:
            raise AcmeError(exc.message) from exc
        except ProviderError as exc:
            raise AcmeError(f"the DNS provider could not read the TXT back: {exc.message}") from exc
        say(f"TXT {seen}; answering {len(pending)} challenge(s)")
        for challb, response in pending:
            _ca(_answer(acme, challb, response), net)
        deadline = _deadline(self.order_timeout)
        order_now = _ca(lambda: acme.poll_authorizations(order, deadline), net)
        say(f"the CA validated {len(order_now.authorizations)} name(s)")


# -- the network, with the last answer kept (its Retry-After) -------------------------------------


class _Net(client.ClientNetwork):
    def __init__(self, key: JWK, verify: str | bool) -> None:
        super().__init__(
            key,
            alg=ES256,
            user_agent=f"ServerCTL/{__version__} acme-python",
            timeout=NETWORK_TIMEOUT_S,
        )
        # requests takes a CA bundle's path where the library's signature says bool.
        self.verify_ssl = verify  # type: ignore[assignment]
        self.last_response: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = super()._send_request(method, url, *args, **kwargs)
        return self.last_response


def _answer(
    acme: client.ClientV2, challb: messages.ChallengeBody, response: challenges.ChallengeResponse
) -> Callable[[], messages.ChallengeResource]:
    return lambda: acme.answer_challenge(challb, response)


def _ca(call: Callable[[], T], net: client.ClientNetwork) -> T:
    """Call the CA; whatever fails becomes an AcmeError in the CA's own words."""
    try:
        return call()
    except messages.Error as exc:
        last = net.last_response if isinstance(net, _Net) else None
        raise _problem(exc, "the CA refused the request", last) from exc
    except acme_errors.ValidationError as exc:
        raise _validation_failed(exc) from exc
    except acme_errors.IssuanceError as exc:
        raise _problem(exc.error, "the CA did not issue the certificate", None) from exc
    except acme_errors.TimeoutError as exc:
        raise AcmeError(
            "the CA did not finish the order in time; nothing was retried (try again later)"
        ) from exc
    except requests.exceptions.SSLError as exc:
        raise AcmeError(
            f"cannot verify the ACME server's HTTPS certificate: {exc}; for a private CA give "
            "its CA certificate as ca_bundle in the ACME settings"
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise AcmeError(f"cannot reach the ACME server: {exc}") from exc
    except acme_errors.Error as exc:
        raise AcmeError(f"the ACME exchange failed: {exc}") from exc


def _problem(error: messages.Error, what: str, response: requests.Response | None) -> AcmeError:
    detail = error.detail or error.title or error.description or "no detail given"
    sub = [
        f"{p.identifier.value if p.identifier else ''}: {p.detail}" for p in error.subproblems or ()
    ]
    text = f"{what}: {detail}" + (f" ({'; '.join(sub)})" if sub else "") + f" [{error.typ}]"
    retry_after = None
    if error.typ == RATE_LIMITED:
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        )
        if retry_after is not None:
            text += f"; the CA asks to wait {retry_after:.0f} s"
    return AcmeError(text, acme_type=error.typ, detail=detail, retry_after=retry_after)


def _validation_failed(exc: acme_errors.ValidationError) -> AcmeError:
    problems: list[str] = []
    first: messages.Error | None = None
    for authz in exc.failed_authzrs:
        for challb in authz.body.challenges:
            if challb.error is not None:
                first = first or challb.error
                problems.append(f"{authz.body.identifier.value}: {challb.error.detail}")
    text = "the CA could not validate the DNS-01 challenge: " + "; ".join(problems)
    if first is not None:
        text += f" [{first.typ}]"
    return AcmeError(
        text,
        acme_type=first.typ if first else None,
        detail=first.detail if first else None,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


# -- small parts ----------------------------------------------------------------------------------


def csr_names(csr_pem: bytes, zone: str) -> tuple[str, ...]:
    """The CSR's DNS names (its subject CN included), each checked to be inside `zone`:
    ValidationError (422) otherwise, before anything is asked of the CA."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ValidationError(f"the CSR is not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise ValidationError("the CSR's signature does not verify")
    found: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        found += [str(n).lower() for n in san.value.get_values_for_type(x509.DNSName)]
        if san.value.get_values_for_type(x509.IPAddress):
            raise ValidationError("the CSR names an IP address: DNS-01 covers DNS names only")
    except x509.ExtensionNotFound:
        pass
    for attribute in csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME):
        value = str(attribute.value).lower()
        if value not in found:
            found.append(value)
    if not found:
        raise ValidationError("the CSR names no DNS name (no subjectAltName, no CN)")
    outside = [n for n in found if not names.in_zone(n.removeprefix("*."), zone)]
    if outside:
        raise ValidationError(
            f"the CSR names {', '.join(outside)}, outside the zone {zone}: the pool's DNS "
            "provider can answer DNS-01 only for names in its zone"
        )
    return tuple(found)


def _dns01(authz: messages.AuthorizationResource, name: str) -> messages.ChallengeBody:
    for challb in authz.body.challenges:
        if isinstance(challb.chall, challenges.DNS01):
            return challb
    offered = ", ".join(str(c.chall.typ) for c in authz.body.challenges) or "none"
    raise AcmeError(f"the CA offers no dns-01 challenge for {name} (it offers: {offered})")


def _clean_up(provider: DNSProvider, zone: str, created: list[dns01.Challenge]) -> str | None:
    """Remove every TXT value set for this order; what could not be removed, or None."""
    failed: list[str] = []
    for challenge in created:
        try:
            provider.delete_txt(zone, challenge.record, challenge.value)
        except ServerCTLError as exc:
            failed.append(f"{challenge.record} ({exc.message})")
        except Exception as exc:  # noqa: BLE001 - clean-up must try every record
            failed.append(f"{challenge.record} ({exc.__class__.__name__}: {exc})")
    if failed:
        left = "could not remove the TXT value at " + "; ".join(failed) + ": remove it by hand"
        log.warning("ACME clean-up: %s", left)
        return left
    return None


def _add_cleanup(failure: BaseException, left: str) -> None:
    if isinstance(failure, ServerCTLError):
        failure.message = f"{failure.message}; also {left}"
        failure.args = (failure.message,)


def _issued(chain_pem: str, cleanup_error: str | None) -> Issued:
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    return Issued(
        chain_pem=chain_pem,
        not_after=leaf.not_valid_after_utc,
        serial=f"{leaf.serial_number:x}",
        names=dns_names,
        cleanup_error=cleanup_error,
    )


def _jwk(account: AcmeAccount) -> JWK:
    key = serialization.load_pem_private_key(account.key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AcmeError("the stored ACME account key is not an EC key")
    return JWKEC(key=key)


def _deadline(seconds: float) -> datetime.datetime:
    # The library compares with naive local datetime.now().
    return datetime.datetime.now() + datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def _trust(config: AcmeSettings) -> Iterator[str | bool]:
    """What verifies the CA's HTTPS: the settings' bundle (as a file for requests), else the
    system's trust store."""
    if not config.ca_bundle:
        yield True
        return
    fd, path = tempfile.mkstemp(prefix="serverctl-acme-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(config.ca_bundle)
        yield path
    finally:
        os.unlink(path)
