"""moto in server mode on loopback, seeded with what a demo or test needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from devtools.ports import free_port, wait_for_port

REGION = "us-east-1"


class MotoServer:
    """A ThreadedMotoServer on 127.0.0.1; `env` holds the AWS variables that point boto3 at it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, service: str, region: str = REGION) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def start(self) -> MotoServer:
        # werkzeug logs every request moto serves; that drowns the demo's and the tests' own output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._server.stop()

    def restart(self) -> None:
        """Serve again on the same port after stop(): AWS back after an outage (moto's state lives in this process)."""
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.start()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


@dataclass(frozen=True)
class Network:
    """A VPC with one security group, as seeded into moto."""

    vpc_id: str
    security_group_id: str


def seed_security_group(moto: MotoServer, name: str = "jit-lb-demo") -> Network:
    """Create a VPC and an empty security group for grants to land in."""
    ec2 = moto.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    group_id = ec2.create_security_group(GroupName=name, Description="jit-lb grants", VpcId=vpc_id)["GroupId"]
    return Network(vpc_id=vpc_id, security_group_id=group_id)
