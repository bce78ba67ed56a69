"""moto in server mode on loopback, seeded with what a demo or test needs."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
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

    def client(self, service: str, region: str = REGION, *, via: str | None = None, config: Any = None) -> Any:
        """A boto3 client of this moto's, or of a proxy in front of it (`via`, bench/latency_proxy.py)."""
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=via or self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
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
    """What a demo or a test grants access to, as seeded into moto."""

    vpc_id: str
    security_group_id: str
    load_balancer_arn: str = ""
    listener_arn: str = ""
    target_group_arn: str = ""
    role_name: str = ""
    haproxy_runtime_api: str = ""  # set when the stack runs a real HAProxy
    haproxy_acl: str = ""

    def security_group_grant(self, ports: list[int]) -> dict[str, Any]:
        """A policy target's `grant:` opening `ports` of the seeded security group to the requester."""
        return {
            "kind": "aws_security_group",
            "region": REGION,
            "security_group_id": self.security_group_id,
            "ports": ports,
        }

    def listener_rule_grant(self, **more: Any) -> dict[str, Any]:
        """A policy target's `grant:` of /admin/* by a rule on the seeded ALB's listener, to its target group."""
        return {
            "kind": "aws_alb_listener_rule",
            "region": REGION,
            "listener_arn": self.listener_arn,
            "target_group_arn": self.target_group_arn,
            "path_patterns": ["/admin/*"],
            **more,
        }


@dataclass(frozen=True)
class Alb:
    """An ALB with one HTTP listener (default: 403) and one target group."""

    load_balancer_arn: str
    listener_arn: str
    target_group_arn: str


def seed_security_group(moto: MotoServer, name: str = "jit-lb-demo") -> Network:
    """Create a VPC and an empty security group for grants to land in."""
    ec2 = moto.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    group_id = ec2.create_security_group(GroupName=name, Description="jit-lb grants", VpcId=vpc_id)["GroupId"]
    return Network(vpc_id=vpc_id, security_group_id=group_id)


def seed_load_balancer(moto: MotoServer, unique: str | None = None) -> Alb:
    """An ALB in a VPC of its own with two subnets, an HTTP listener and a target group; names made unique."""
    unique = unique or uuid.uuid4().hex[:12]
    ec2 = moto.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.30.{index}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"][
            "SubnetId"
        ]
        for index, zone in enumerate("ab", start=1)
    ]
    elbv2 = moto.client("elbv2")
    balancer = elbv2.create_load_balancer(Name=f"lb-{unique}", Subnets=subnets)["LoadBalancers"][0]
    group = elbv2.create_target_group(Name=f"tg-{unique}", Protocol="HTTP", Port=8080, VpcId=vpc_id)["TargetGroups"][0]
    listener = elbv2.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "403"}}],
    )["Listeners"][0]
    return Alb(balancer["LoadBalancerArn"], listener["ListenerArn"], group["TargetGroupArn"])


def seed_role(moto: MotoServer, name: str) -> str:
    """An IAM role that IAM grants put their inline policies on."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}
        ],
    }
    iam = moto.client("iam")
    # moto's state is per process: an earlier stack in the same test run may have made it.
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    return name


def seed_network(moto: MotoServer) -> Network:
    """Everything the demo and the end-to-end tests grant on: a security group, an ALB and an IAM role."""
    group = seed_security_group(moto)
    alb = seed_load_balancer(moto)
    role = seed_role(moto, "dev1-admin")
    return Network(
        group.vpc_id, group.security_group_id, alb.load_balancer_arn, alb.listener_arn, alb.target_group_arn, role
    )
