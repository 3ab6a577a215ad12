"""Local stand-in for the Twilio Messages API and the SendGrid v3 API.

Activities talk to it through the real ``twilio`` and ``sendgrid`` SDKs (only the base URL
changes), so tests and the demo exercise the same serialisation, auth and error paths as
production, while faults (429, 500, bad recipient, late answers) can be injected per recipient.

One module per provider (`twilio`, `sendgrid`); `server` holds what they share (the message log,
faults, stats, the control API, a log without borrower data); `client` drives the control API of
an emulator in another process. In-process: `ProviderEmulator().start()`; as its own process:
``python -m infra.emulator --port 8099 [--url-file PATH]``.
"""

from infra.emulator.client import EmulatorClient
from infra.emulator.faults import ANY, EMAIL, SMS, Fault
from infra.emulator.server import ProviderEmulator

__all__ = ["ANY", "EMAIL", "SMS", "EmulatorClient", "Fault", "ProviderEmulator"]
