"""What kind of thing a row is, where the kind decides what the platform does with it."""

from __future__ import annotations

from enum import StrEnum


class ImageKind(StrEnum):
    CATALOG = "catalog"  # built here from the catalog's recipe
    REGISTERED = "registered"  # an admin's image, by reference
    SAVED = "saved"  # a user's system disk, committed


class PostingKind(StrEnum):
    """What a ledger row pays for."""
    USAGE = "usage"  # a run's GPU or CPU time
    STORAGE = "storage"  # disks and saved images, by the day
    RECHARGE = "recharge"
    VOUCHER = "voucher"
    EXPIRY = "expiry"  # what was left of a voucher when it expired


# What a cost counts: what was used, not what was paid in.
COST_KINDS = (PostingKind.USAGE, PostingKind.STORAGE)


class AccountKind(StrEnum):
    WALLET = "wallet"
    VOUCHER = "voucher"
    REVENUE = "revenue"
    RECHARGES = "recharges"
    VOUCHERS = "vouchers"


class NoticeKind(StrEnum):
    """What a user's notification is about (the console labels and colours it by this)."""
    LOW_BALANCE = "low_balance"
    STOPPED = "stopped"  # for an empty wallet
    AUTOSTOP = "autostop"
    AUTOSTOP_WARNING = "autostop_warning"
    SHUTDOWN = "shutdown"  # the instance stopped itself (dockyard-shutdown)
    INSTANCE = "instance"  # its start, queue or migration
    NODE = "node"  # its node was lost or came back
    CLONE = "clone"
    SAVE = "save"
    VOLUME = "volume"
    RELEASE = "release"  # auto-release of an idle stopped instance


class PriceKind(StrEnum):
    GPU = "gpu"  # per GPU-hour, by model (and node)
    NO_GPU = "no_gpu"  # per hour of an instance started without GPUs
    DISK = "disk"  # per GB-day
    IMAGE = "image"  # per GB-day of a saved image
