"""The verdict as JUnit XML, so CI systems show it: a testsuite per ChaosTest, a testcase per check
(invariant, catch-up, coverage, ...) and per checklist item. A violation is a ``failure``; an
Inconclusive check is a ``failure`` of type ``inconclusive`` too (it proved nothing, so CI must not go
green); a check the spec left out is ``skipped``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from fincart_chaos.report import Report


def _case(suite: ET.Element, classname: str, name: str, result: str, message: str) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    if result == "fail":
        ET.SubElement(case, "failure", type="violation", message=message[:500]).text = message
    elif result == "inconclusive":
        ET.SubElement(case, "failure", type="inconclusive", message=message[:500]).text = message
    elif result == "skipped":
        ET.SubElement(case, "skipped", message=message[:500] or "not enabled in spec.verification")


def junit_xml(reports: Sequence[Report]) -> str:
    root = ET.Element("testsuites", name="fincart-chaos")
    for report in reports:
        suite = ET.SubElement(root, "testsuite", name=report.name, time=str(report.timings.total_s or 0))
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="verdict", value=report.verdict)
        ET.SubElement(props, "property", name="reason", value=report.reason or "")
        if report.verdict == "Error":
            _case(suite, f"{report.name}.run", "run", "fail", report.reason or "error")
        for check in report.checks:
            _case(
                suite, f"{report.name}.checks", f"{check.name}: {check.title}", check.result, "; ".join(check.messages)
            )
        for item in report.checklist:
            result = {True: "pass", False: "fail", None: "skipped"}[item.ok]
            _case(suite, f"{report.name}.checklist", item.item, result, item.detail)
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
        suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
        suite.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
