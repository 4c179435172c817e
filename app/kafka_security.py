"""Kafka connection security from settings: TLS and SASL (SCRAM) for faust and plain aiokafka."""
from __future__ import annotations

import asyncio
import ssl
import sys
from typing import Any, Optional

import faust
from aiokafka import errors
from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest
from faust.types.auth import CredentialsT

from app.kafka_tools import bootstrap
from app.settings import Settings

EX_FAILURE, EX_NOPERM = 1, 77
_REFUSED = (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError)
_NO_SUCH_SASL = (errors.UnsupportedSaslMechanismError, errors.IllegalSaslStateError,
                 errors.AuthenticationMethodNotSupported)


def ssl_context(settings: Settings) -> Optional[ssl.SSLContext]:
    """A verifying client context for SSL and SASL_SSL (hostname checked), else None."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_cafile or None)


def broker_credentials(settings: Settings) -> Optional[CredentialsT]:
    """What faust.App(broker_credentials=...) needs; None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    # SASLCredentials picks SASL_SSL when given a context, SASL_PLAINTEXT otherwise.
    return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                 mechanism=settings.kafka_sasl_mechanism, ssl_context=context)


def aiokafka_auth(settings: Settings) -> dict[str, Any]:
    """The same security as keyword arguments of AIOKafkaProducer/Consumer/AdminClient."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        kwargs["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL_"):
        kwargs.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                      sasl_plain_username=settings.kafka_sasl_username,
                      sasl_plain_password=settings.kafka_sasl_password)
    return kwargs


async def check_broker_access(settings: Settings, timeout_s: float = 15.0) -> None:
    """Open one authenticated connection to the first bootstrap server that answers.

    faust and aiokafka report refused credentials as "Unable to bootstrap" with a long
    traceback (the cause is only in a log line before it); this prints one line naming the
    setting to fix and exits 77 (EX_NOPERM). Unreachable brokers: one line too, exit 1.
    """
    auth = aiokafka_auth(settings)
    problems = []
    for server in bootstrap(settings.kafka_brokers).split(","):
        host, _, port = server.rpartition(":")
        conn = None
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **auth), timeout_s)
            # A SASL listener answers ApiVersions before authentication: only a real request
            # shows that a PLAINTEXT client is talking to it.
            await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
        except _REFUSED as exc:
            raise _exit(f"kafka: {server} refused the {settings.kafka_sasl_mechanism} credentials of user "
                        f"{settings.kafka_sasl_username!r} ({type(exc).__name__}); check "
                        "APP_KAFKA_SASL_USERNAME and APP_KAFKA_SASL_PASSWORD", EX_NOPERM) from None
        except _NO_SUCH_SASL as exc:
            raise _exit(f"kafka: {server} does not offer SASL {settings.kafka_sasl_mechanism} "
                        f"({_describe(exc)}); check APP_KAFKA_BROKERS (port), "
                        "APP_KAFKA_SECURITY_PROTOCOL and APP_KAFKA_SASL_MECHANISM", EX_NOPERM) from None
        except ssl.SSLCertVerificationError as exc:
            raise _exit(f"kafka: TLS certificate of {server} not trusted ({exc.verify_message}); "
                        "set APP_KAFKA_SSL_CAFILE to the CA that signed it", EX_NOPERM) from None
        except (OSError, asyncio.TimeoutError, errors.KafkaError) as exc:
            problems.append(f"{server}: {_describe(exc)}")
            continue
        finally:
            if conn is not None:
                conn.close()
        return
    raise _exit(f"kafka: no bootstrap server answered with {settings.kafka_security_protocol} "
                f"({'; '.join(problems)}); check APP_KAFKA_BROKERS and APP_KAFKA_SECURITY_PROTOCOL",
                EX_FAILURE)


def _exit(message: str, code: int) -> SystemExit:
    # The message goes to stderr here, not through SystemExit(message), to choose the exit code.
    print(message, file=sys.stderr, flush=True)
    return SystemExit(code)


def _describe(exc: BaseException) -> str:
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name} {text}".strip()
