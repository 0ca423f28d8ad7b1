"""Molar mass from a formula, and moles <-> grams with n = m / M. Atomic masses are given."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

from zephyr.data.synth.problem import Mistake, Problem, dec, eq, fmt, pick

FAMILY = "molar_mass"

# Two tables the question states: precise (2 d.p. answers) and rounded (school) masses.
PRECISE = {
    "H": "1.008", "C": "12.01", "N": "14.01", "O": "16.00", "Na": "22.99", "Mg": "24.31",
    "Al": "26.98", "S": "32.06", "Cl": "35.45", "K": "39.10", "Ca": "40.08", "Fe": "55.85",
    "Cu": "63.55", "Zn": "65.38",
}  # fmt: skip
ROUNDED = {
    "H": "1", "C": "12", "N": "14", "O": "16", "Na": "23", "Mg": "24", "Al": "27", "S": "32",
    "Cl": "35.5", "K": "39", "Ca": "40", "Fe": "56", "Cu": "63.5", "Zn": "65",
}  # fmt: skip
COMPOUNDS = {
    "H2O": "water", "CO2": "carbon dioxide", "NaCl": "sodium chloride", "H2SO4": "sulfuric acid",
    "CH4": "methane", "NH3": "ammonia", "C6H12O6": "glucose", "CaCO3": "calcium carbonate",
    "NaOH": "sodium hydroxide", "HCl": "hydrogen chloride", "O2": "oxygen", "N2": "nitrogen",
    "KCl": "potassium chloride", "MgO": "magnesium oxide", "C2H5OH": "ethanol",
    "HNO3": "nitric acid", "Ca(OH)2": "calcium hydroxide", "Al2O3": "aluminium oxide",
    "Fe2O3": "iron(III) oxide", "SO2": "sulfur dioxide", "NO2": "nitrogen dioxide",
    "CH3COOH": "acetic acid", "MgCl2": "magnesium chloride", "KNO3": "potassium nitrate",
    "Na2CO3": "sodium carbonate", "CuSO4": "copper(II) sulfate", "C3H8": "propane",
    "C2H4": "ethene", "NaHCO3": "sodium hydrogen carbonate", "H2O2": "hydrogen peroxide",
    "K2SO4": "potassium sulfate", "ZnCl2": "zinc chloride", "CO": "carbon monoxide",
    "Mg(OH)2": "magnesium hydroxide", "Al(OH)3": "aluminium hydroxide", "FeCl3": "iron(III) chloride",
    "CaCl2": "calcium chloride", "Na2SO4": "sodium sulfate", "C12H22O11": "sucrose",
    "N2O": "nitrous oxide",
}  # fmt: skip
MOLES = ("0.1", "0.2", "0.25", "0.5", "1.5", "2", "2.5", "3", "4", "5", "0.75", "1.2")


def atoms(formula: str) -> dict[str, int]:
    """Element counts of a formula with optional brackets: 'Ca(OH)2' -> {Ca: 1, O: 2, H: 2}."""
    out: dict[str, int] = {}
    for group, mult, elem, count in re.findall(r"\(([^)]*)\)(\d*)|([A-Z][a-z]?)(\d*)", formula):
        if group:
            for e, c in atoms(group).items():
                out[e] = out.get(e, 0) + c * int(mult or 1)
        else:
            out[elem] = out.get(elem, 0) + int(count or 1)
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _molar_mass(
    formula: str, table: dict[str, str]
) -> tuple[Decimal, list[str], list[Mistake], str]:
    counts = atoms(formula)
    masses = {e: Decimal(table[e]) for e in counts}
    terms = [(c, masses[e]) for e, c in counts.items()]
    total = sum(c * m for c, m in terms)
    places = 2 if table is PRECISE else None

    def line(parts: list[Decimal]) -> str:
        expr = " + ".join(dec(m) if c == 1 else f"{c} × {dec(m)}" for c, m in terms)
        prods = " + ".join(dec(p) for p in parts)
        s = sum(parts)
        out = f"M = {expr} = {prods}" if any(c > 1 for c, _ in terms) else f"M = {expr}"
        if len(parts) > 1:
            out += f" = {dec(s)}"
        if places and (Fraction(s) * 100).denominator != 1:
            out += f" ≈ {fmt(s, 2)}"
        return out

    has = f"{formula} has " + _and([f"{c} {e}" for e, c in counts.items()]) + "."
    steps = [has, line([c * m for c, m in terms])]
    mistakes = [Mistake("unit", tuple(steps), f"{fmt(total, places)} g")]
    if any(c > 1 for c in counts.values()):  # ignoring the subscripts
        once = sum(masses.values())
        mistakes.append(
            Mistake(
                "method",
                (f"M = {' + '.join(dec(m) for m in masses.values())} = {dec(once)}",),
                f"{fmt(once, places)} g/mol",
            )
        )
    slip = [c * m for c, m in terms]
    i = max(range(len(slip)), key=lambda j: slip[j])
    slip[i] += 1
    mistakes.append(Mistake("arithmetic", (has, line(slip)), f"{fmt(sum(slip), places)} g/mol"))
    return total, steps, mistakes, f"{fmt(total, places)} g/mol"


def make(rng) -> Problem:
    kind = pick(rng, {"mass": 3, "moles": 2, "grams": 2})
    formula = rng.choice(list(COMPOUNDS))
    name = COMPOUNDS[formula]
    table = PRECISE if rng.random() < 0.5 else ROUNDED
    if kind == "mass":
        given = _and([f"{e} = {table[e]}" for e in atoms(formula)])
        rounding = " Give the answer to 2 decimal places." if table is PRECISE else ""
        question = (
            rng.choice(
                [
                    f"What is the molar mass of {formula} ({name})? Use {given}.",
                    f"Calculate the molar mass of {name}, {formula}. Atomic masses: {given}.",
                ]
            )
            + rounding
        )
        value, steps, mistakes, answer = _molar_mass(formula, table)
        places, unit = (2 if table is PRECISE else None), "g/mol"
        key = f"M:{formula}:{table is PRECISE}"
    else:
        places, M = 2, Decimal(fmt(_molar_mass(formula, table)[0], 2 if table is PRECISE else None))
        if kind == "moles":
            m = (
                Decimal(rng.randint(1, 500))
                if rng.random() < 0.6
                else (M * Decimal(rng.choice(MOLES))).normalize()
            )
            m = Decimal(f"{m:f}")
            value = Fraction(m) / Fraction(M)
            question = rng.choice(
                [
                    f"How many moles are in {m:f} g of {formula}? (M = {dec(M)} g/mol) Give the answer to 2 decimal places.",
                    f"A sample of {name} ({formula}, M = {dec(M)} g/mol) has a mass of {m:f} g. How many moles is that, to 2 decimal places?",
                ]
            )
            rule = "n = m ÷ M"
            steps = [rule, f"n = {m:f} ÷ {dec(M)} {eq(value, 2)} {fmt(value, 2)}"]
            inv = Fraction(M) / Fraction(m)
            prod = Fraction(m) * Fraction(M)
            unit = "mol"
            mistakes = [
                Mistake(
                    "method",
                    ("n = M ÷ m", f"n = {dec(M)} ÷ {m:f} ≈ {fmt(inv, 2)}"),
                    f"{fmt(inv, 2)} mol",
                ),
                Mistake(
                    "method",
                    ("n = m × M", f"n = {m:f} × {dec(M)} = {fmt(prod, 2)}"),
                    f"{fmt(prod, 2)} mol",
                ),
                Mistake("unit", tuple(steps), f"{fmt(value, 2)} g"),
            ]
            key = f"n:{formula}:{m}:{M}"
        else:
            n = Decimal(rng.choice(MOLES))
            value = n * M
            question = rng.choice(
                [
                    f"What is the mass of {n} mol of {formula}? (M = {dec(M)} g/mol) Give the answer to 2 decimal places.",
                    f"Find the mass, in grams, of {n} mol of {name} ({formula}, M = {dec(M)} g/mol), to 2 decimal places.",
                ]
            )
            rule = "m = n × M"
            steps = [rule, f"m = {n} × {dec(M)} = {dec(value)}"]
            unit = "g"
            inv = Fraction(M) / Fraction(n)
            mistakes = [
                Mistake(
                    "method",
                    ("m = M ÷ n", f"m = {dec(M)} ÷ {n} ≈ {fmt(inv, 2)}"),
                    f"{fmt(inv, 2)} g",
                ),
                Mistake("unit", tuple(steps), f"{fmt(value, 2)} mol"),
                Mistake(
                    "arithmetic",
                    (rule, f"m = {n} × {dec(M)} = {fmt(value + 10, 2)}"),
                    f"{fmt(value + 10, 2)} g",
                ),
            ]
            key = f"m:{formula}:{n}:{M}"
        answer = f"{fmt(value, places)} {unit}"
    value = Fraction(value)
    step = Fraction(1, 100) if places else 1
    near = [value + 10 * step, value - 10 * step, value * 2]
    return Problem(
        family=FAMILY,
        key=key,
        question=question,
        value=value,
        answer=answer,
        steps=tuple(steps),
        unit=unit,
        mistakes=tuple(m for m in mistakes if m.answer != answer),
        distractors=tuple(f"{fmt(x, places)} {unit}" for x in near),
    )
