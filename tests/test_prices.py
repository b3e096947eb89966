"""Prices: the cheapest named offer by default, dates shown and stale rows flagged, reserved
never above on-demand, one flag name per idea, user GPUs from a spec file, several --gpu."""
from datetime import date

import pytest
from click.testing import CliRunner

from planner import catalog
from planner.catalog import Price
from planner.cli import main
from planner.errors import InputError

TRACE = "traces/lphd.csv"


def test_default_is_the_cheapest_listed_offer_named_with_its_date():
    usd, src = catalog.price_usd_per_gpu_hour("l40s")
    l40s = [p for p in catalog.prices() if p.gpu == "l40s" and p.kind == "on_demand"]
    cheapest = min(l40s, key=lambda p: p.usd_per_gpu_hour)
    assert usd == cheapest.usd_per_gpu_hour and len(l40s) > 1   # not a median of two offers
    assert src.startswith(f"on_demand {cheapest.provider} {cheapest.as_of} (cheapest listed)")
    usd_aws, src_aws = catalog.price_usd_per_gpu_hour("l40s", provider="aws")
    assert usd_aws > usd and src_aws.startswith("on_demand aws ")
    with pytest.raises(InputError, match="not in the price catalog; choose one of .*aws"):
        catalog.price_usd_per_gpu_hour("l40s", provider="acme")


def test_stale_rows_are_flagged_after_six_months():
    assert catalog.price_age_note("2025-01", date(2025, 6, 30)) == ""
    assert catalog.price_age_note("2025-01", date(2025, 7, 1)) == "6 months old - check the provider's current price"
    assert catalog.months_old("2024-06", date(2026, 12, 4)) == 30


def test_reserved_above_on_demand_is_refused_and_never_used():
    rows = (Price("x", "p", "on_demand", 2.0, "2025-01", "s"), Price("x", "p", "reserved", 2.5, "2025-01", "s"))
    with pytest.raises(InputError, match="x p reserved \\$2.5/GPU-hour .* above its on-demand \\$2"):
        catalog.check_reserved(rows, "prices.csv")
    catalog.check_reserved(rows[:1] + (Price("x", "p", "reserved", 1.5, "2025-01", "s"),), "prices.csv")
    for g in ("a100", "a100-40gb", "h100", "a10g"):
        od, _ = catalog.price_usd_per_gpu_hour(g, "on_demand")
        res, src = catalog.price_usd_per_gpu_hour(g, "reserved")
        assert res <= od, (g, src)


def test_recommend_prints_price_provider_date_and_takes_comma_gpus():
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--gpu", "a100,h100"])
    assert r.exit_code == 0, r.output
    assert "price a100-80gb $" in r.output and "/GPU-hour: on_demand " in r.output and "months old" in r.output
    section = r.output.split("best plan on each GPU type alone:")[1]
    assert "a100-80gb" in section and "h100-sxm" in section
    assert "the chosen plan" in section and ("more than the chosen plan" in section or "as cheap" in section)


def test_gpu_spec_yaml_and_csv(tmp_path):
    y = tmp_path / "mygpu.yaml"
    y.write_text("name: my-accel\nmemory_gb: 96\nmemory_gb_s: 4000\nfp16_tflops: 800\nfp8_tflops: 1600\n"
                 "link_gb_s: 450\nnvlink_domain: 8\nusd_per_gpu_hour: 2.2\n")
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--gpu-spec", str(y), "--gpu", "my-accel",
                                  "-o", str(tmp_path / "plan.json")])
    assert r.exit_code == 0, r.output
    assert "price my-accel $2.20/GPU-hour: user override" in r.output and "my-accel" in r.output.split("PLAN")[1]
    from planner.plan import read_plan
    assert read_plan(tmp_path / "plan.json").inputs["gpu_specs"]["my-accel"]["memory_gb"] == 96
    c = tmp_path / "g.csv"
    c.write_text("name,memory_gb,memory_gb_s\nother,48,900\n")
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--gpu-spec", str(c), "--gpu", "other"])
    assert r.exit_code == 2 and "missing fp16_tflops" in r.output
    c.write_text("name,memory_gb,memory_gb_s,fp16_tflops,speed\nother,48,900,300,fast\n")
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--gpu-spec", str(c), "--gpu", "other"])
    assert r.exit_code == 2 and "unknown field(s) speed" in r.output
    c.write_text("name,memory_gb,memory_gb_s,fp16_tflops\nh100-sxm,80,3350,989\n")
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--gpu-spec", str(c), "--gpu", "h100"])
    assert r.exit_code == 2 and "in the catalog already" in r.output


def test_report_takes_gpu_spec_and_provider(tmp_path):
    y = tmp_path / "g.yaml"
    y.write_text("name: rep-accel\nmemory_gb: 96\nmemory_gb_s: 4000\nfp16_tflops: 800\nusd_per_gpu_hour: 2.2\n")
    out = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", "--trace", "traces/lpld.csv", "--gpu-spec", str(y), "--gpu", "rep-accel",
                                  "--loads", "1", "--sim-loads", "1", "--windows", "0", "--max-sim-requests", "500",
                                  "--no-progress", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "rep-accel" in r.output and "$2.20/hour" in r.output and out.exists()
