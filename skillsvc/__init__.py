"""skillsvc: installs, validates, versions and rolls back agent skill packages.

Importing this package has no side effects and pulls in no server dependencies, so
code that has the server installed can ``import skillsvc.v1`` for the generated stubs
alone. Clients without the server use the ``skillsvc-client`` distribution
(``clients/python``), which carries the same stubs as ``skillsvc_client.v1``.
"""

__version__ = "0.1.0"
