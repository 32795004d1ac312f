"""MITRE ATT&CK tags on rules, checked when rules load.

Tags in the ``attack.`` namespace follow the Sigma convention (lower case, underscores)::

    attack.credential_access     a tactic: one of TACTICS (Enterprise ATT&CK); Sigma's newer spelling
                                 with hyphens (attack.credential-access) is accepted too
    attack.t1110                 a technique: T + 4 digits
    attack.t1110.001             a sub-technique: T + 4 digits + . + 3 digits
    attack.g0032 / attack.s0002  a group / a piece of software: G or S + 4 digits

Anything else after ``attack.`` is an error naming the closest tactic (``attack.credential_acces`` ->
did you mean 'attack.credential_access'?), and an upper-case id is an error saying how to write it. Whether a
well-formed technique id exists is not checked: siem ships no copy of the technique list (it changes with
every ATT&CK release). Tags outside ``attack.`` (``cis.5.1``, ``team.web``) are free-form.

The tactic list is the Enterprise matrix's (https://attack.mitre.org/tactics/enterprise/, TA0001-TA0043)
plus the two tactics that replaced Defense Evasion in ATT&CK v18 (stealth, defense_impairment), as SigmaHQ's
rules in ../shared/datasets/sigmahq_rules already use them.
"""

from __future__ import annotations

import re

from siem.tomlcheck import did_you_mean

TACTICS = frozenset({
    "reconnaissance", "resource_development", "initial_access", "execution", "persistence",
    "privilege_escalation", "defense_evasion", "credential_access", "discovery", "lateral_movement",
    "collection", "command_and_control", "exfiltration", "impact", "stealth", "defense_impairment",
})
_ID = re.compile(r"^(t\d{4}(\.\d{3})?|[gs]\d{4})$")
_ID_ANY_CASE = re.compile(r"^([tT]\d{4}(\.\d{3})?|[gGsS]\d{4})$")


def check_tag(tag: str) -> str | None:
    """None for a valid tag, else what is wrong with it (an error message)."""
    if not tag.lower().startswith("attack."):
        return None
    name = tag[len("attack."):]
    if tag[:7] != "attack.":
        return f"write ATT&CK tags in lower case: '{tag.lower()}'"
    if name.replace("-", "_") in TACTICS or _ID.match(name):
        return None
    if _ID_ANY_CASE.match(name):
        return f"write ATT&CK ids in lower case: 'attack.{name.lower()}'"
    if name.replace("-", "_").lower() in TACTICS:
        return f"write ATT&CK tactics in lower case: 'attack.{name.lower()}'"
    if re.match(r"^[tT]\d", name):
        return f"'{tag}' is not a technique id (attack.tNNNN or attack.tNNNN.NNN)"
    return (f"unknown ATT&CK tactic '{name}'{did_you_mean(name, TACTICS)} "
            f"(tactics: {', '.join(sorted(TACTICS))}; techniques: attack.tNNNN[.NNN])")
