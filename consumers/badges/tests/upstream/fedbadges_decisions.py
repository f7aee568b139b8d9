# -*- coding: utf-8 -*-
"""fedbadges 1.0.2's own rule code, run over rules and messages given on stdin.

Used by tests/upstream.rs to compare fedhub's decisions with upstream's. Runs
under Python 2.7 (fedbadges 1.x is Python 2 code), with the packages that
scripts/python-env.sh installs into the directory named by
FEDBADGES_PY27_SITE. Nothing else is reached: no Tahrir database (nobody
holds a badge yet), datanommer's `Message.grep` answers the stub count that
tests/upstream.rs also answers (so the condition sees the same value on both
sides) and records the filter it was asked, and every candidate exists in
FAS.

stdin: {"rules": [{"name": str, "yaml": str}], "messages": [body, ...]}
stdout: one JSON document: {"results": [[{"triggered": bool, "awardees":
[str], "error": str or null, "filters": [kwargs]} for each rule] for each
message]}
"""

import json
import os
import site
import sys

site.addsitedir(os.environ["FEDBADGES_PY27_SITE"])

import datanommer.models  # noqa: E402
import fedbadges.rules  # noqa: E402
import yaml  # noqa: E402


def as_list(value):
    if value is None:
        return []
    if isinstance(value, basestring):  # noqa: F821 (Python 2)
        return [value]
    return list(value)


def stub_total(kwargs):
    """The stub history's count: characters of the users named, plus two per
    topic, plus one per category (tests/upstream.rs counts the same)."""
    users = as_list(kwargs.get("users"))
    return (
        sum(len(u) for u in users)
        + 2 * len(as_list(kwargs.get("topics")))
        + len(as_list(kwargs.get("categories")))
    )


CALLS = []


class StubQuery(object):
    pass


def stub_grep(cls, **kwargs):
    kwargs.pop("defer", None)
    CALLS.append(kwargs)
    return stub_total(kwargs), 1, StubQuery()


def main():
    given = json.load(sys.stdin)
    rules = []
    for r in given["rules"]:
        d = yaml.safe_load(r["yaml"])
        # 1.x rejects `tags` (KeyError: not a possible field) although it
        # reads it; fedhub accepts it. Not part of any decision.
        d.pop("tags", None)
        rules.append(fedbadges.rules.BadgeRule(d, None, None))
    # After the rules are built: their filters were validated against grep's
    # real signature.
    datanommer.models.Message.grep = classmethod(stub_grep)
    fedbadges.rules.user_exists_in_fas = lambda config, user: True
    results = []
    for msg in given["messages"]:
        row = []
        for rule in rules:
            del CALLS[:]
            triggered = bool(rule.trigger.matches(msg))
            del CALLS[:]
            error = None
            try:
                awardees = sorted(rule.matches(msg))
            except Exception as e:  # the 1.x consumer logs and goes on
                awardees = []
                error = repr(e)
            row.append(
                {
                    "triggered": triggered,
                    "awardees": awardees,
                    "error": error,
                    "filters": list(CALLS),
                }
            )
        results.append(row)
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
