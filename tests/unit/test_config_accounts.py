"""`uid`/`gid` names the file gives before the machine has those accounts: looked up per spawn."""

from __future__ import annotations

import grp
import pwd

import pytest

from circus_sd.config.model import WatcherConfig
from circus_sd.config.options import unknown_account
from circus_sd.spawn_plan import SpawnPlanError, with_accounts


def test_only_a_plausible_name_with_no_account_is_looked_up_later() -> None:
    assert unknown_account("uid", "h16-not-yet") == "h16-not-yet"
    assert unknown_account("gid", " h16-not-yet ") == "h16-not-yet"
    assert unknown_account("uid", "nobody") is None  # known now
    assert unknown_account("uid", "1234") is None  # a number needs no account
    for never_a_name in ("-1", "a b", "", "x/y"):
        assert unknown_account("uid", never_a_name) is None  # the parser refuses these


def test_a_name_that_exists_by_the_spawn_is_used_with_its_primary_group() -> None:
    nobody = pwd.getpwnam("nobody")
    ready = with_accounts(WatcherConfig("web", cmd="sleep 1", user_name="nobody"))
    assert (ready.uid, ready.gid, ready.user_name) == (nobody.pw_uid, nobody.pw_gid, None)
    group = grp.getgrgid(0).gr_name
    ready = with_accounts(
        WatcherConfig("web", cmd="sleep 1", user_name="nobody", group_name=group)
    )
    assert (ready.uid, ready.gid) == (nobody.pw_uid, 0)


def test_a_name_still_missing_fails_the_spawn_naming_the_option() -> None:
    with pytest.raises(SpawnPlanError, match=r"^uid: .*no user 'h16-not-yet' exists"):
        with_accounts(WatcherConfig("web", cmd="sleep 1", user_name="h16-not-yet"))
    with pytest.raises(SpawnPlanError, match=r"^gid: .*no group 'h16-not-yet' exists"):
        with_accounts(WatcherConfig("web", cmd="sleep 1", uid=0, group_name="h16-not-yet"))
