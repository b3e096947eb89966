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


OFFERS = ("gpu,provider,kind,usd_per_gpu_hour,as_of,source,note\n"
          "a100,MyCloud,on_demand,1.55,2026-11,quote,\n"
          "a100-80gb,mycloud,reserved,1.10,2026-11,quote,1-year\n"
          "a100-80gb,othercloud,on_demand,1.40,2024-01,quote,\n"
          "h100,mycloud,on_demand,2.60,2026-11-12,,\n")


def test_price_file_in_the_catalogs_form_is_priced_like_the_catalog(tmp_path):
    import copy
    import pickle
    f = tmp_path / "mine.csv"
    f.write_text(OFFERS)
    own = catalog.parse_price_overrides((), f)
    assert set(own) == {"a100-80gb", "h100-sxm"} and isinstance(own["a100-80gb"], catalog.OfferList)
    assert own["a100-80gb"] == 1.40                                  # as a number: the default choice
    today = date(2026, 12, 4)
    usd, src = catalog.price_usd_per_gpu_hour("a100", overrides=own)
    assert usd == 1.40 and src.startswith("on_demand othercloud 2024-01 (mine.csv, cheapest listed); ")
    assert "months old" in src                                       # stale rows of your own are flagged too
    assert catalog.price_usd_per_gpu_hour("a100", provider="MyCloud", overrides=own) == (1.55, "on_demand mycloud 2026-11 (mine.csv)")
    assert catalog.price_usd_per_gpu_hour("a100", "reserved", overrides=own)[0] == 1.10
    # reserved from a provider that lists none: refused, as for the catalog's offers
    with pytest.raises(InputError, match="no reserved price for a100-80gb from othercloud in mine.csv"):
        catalog.price_usd_per_gpu_hour("a100", "reserved", provider="othercloud", overrides=own)
    with pytest.raises(InputError, match="mine.csv prices a100-80gb from mycloud, othercloud only"):
        catalog.price_usd_per_gpu_hour("a100", provider="aws", overrides=own)
    # GPUs the file does not name keep the catalog's offers; the file's providers are known names
    assert catalog.price_usd_per_gpu_hour("l4", overrides=own) == catalog.price_usd_per_gpu_hour("l4")
    with pytest.raises(InputError, match="no on_demand price for l4 from mycloud"):
        catalog.price_usd_per_gpu_hour("l4", provider="mycloud", overrides=own)
    # items win over the file; the map survives what commands do with it (merge, copy, pickle)
    assert catalog.parse_price_overrides(("a100=2.0",), f)["a100-80gb"] == 2.0
    for back in ({**own}["a100-80gb"], copy.deepcopy(own["a100-80gb"]), pickle.loads(pickle.dumps(own["a100-80gb"]))):
        assert back == 1.40 and back.offers == own["a100-80gb"].offers and back.where == "mine.csv"
    assert catalog.read_price_file(f, today=today)["h100-sxm"].offers[0].as_of == "2026-11-12"


@pytest.mark.parametrize("text, message", [
    ("gpu,usd_per_gpu_hour\nh100,2.5\nh100-sxm,2.6\n", "row 3: h100-sxm is listed already \\(row 2\\)"),
    ("gpu,usd\nh100,2.5\n", "unknown column\\(s\\) 'usd'; expected columns gpu,usd_per_gpu_hour"),
    ("usd_per_gpu_hour\n2.5\n", "missing columns; expected columns gpu,usd_per_gpu_hour"),
    ("gpu,usd_per_gpu_hour,region\nh100,2.5,us\n", "unknown column\\(s\\) 'region'"),
    ("gpu,usd_per_gpu_hour,provider\nh100,2.5,aws\n", "offers need columns provider, kind and as_of \\(missing kind, as_of\\)"),
    ("gpu,usd_per_gpu_hour\nh999,2.5\n", "row 2: unknown GPU 'h999'"),
    ("gpu,usd_per_gpu_hour\nh100,inf\n", "row 2: price must be a positive number"),
    ("gpu,usd_per_gpu_hour\nh100,-1\n", "row 2: price must be a positive number"),
    ("gpu,usd_per_gpu_hour\nh100,2.5,9\n", "row 2: more fields than the header's 2"),
    ("", "the file is empty"),
    ("gpu,usd_per_gpu_hour\n", "no price rows"),
    ("gpu,provider,kind,usd_per_gpu_hour,as_of\nh100,aws,monthly,2,2026-01\n", "kind 'monthly' is not one of on_demand, spot, reserved"),
    ("gpu,provider,kind,usd_per_gpu_hour,as_of\nh100,,on_demand,2,2026-01\n", "provider is empty"),
    ("gpu,provider,kind,usd_per_gpu_hour,as_of\nh100,aws,on_demand,2,Jan 2026\n", "as_of 'Jan 2026' is not a date; write YYYY-MM"),
    ("gpu,provider,kind,usd_per_gpu_hour,as_of\nh100,aws,on_demand,2,2026-13\n", "as_of '2026-13' is not a date"),
    ("gpu,provider,kind,usd_per_gpu_hour,as_of\nh100,aws,on_demand,2,2027-01\n", "as_of 2027-01 is in the future"),
    ("gpu,provider,kind,usd_per_gpu_hour,as_of\nh100,aws,on_demand,2,2026-01\nh100,AWS,on_demand,3,2026-01\n",
     "row 3: h100-sxm aws on_demand 2026-01 is listed already"),
    ("gpu,provider,kind,usd_per_gpu_hour,as_of\nh100,aws,on_demand,2,2026-01\nh100,aws,reserved,2.5,2026-01\n",
     "h100-sxm aws reserved \\$2.5/GPU-hour \\(2026-01\\) is above its on-demand \\$2; fix or remove that row"),
])
def test_price_file_is_checked_row_by_row(tmp_path, text, message):
    f = tmp_path / "p.csv"
    f.write_text(text)
    with pytest.raises(InputError, match=message) as e:
        catalog.read_price_file(f, today=date(2026, 12, 4))
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_recommend_and_catalog_take_a_price_file_of_offers(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text(OFFERS)
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--gpu", "a100", "--prices", str(f),
                                  "--provider", "mycloud", "--price-kind", "reserved"])
    assert r.exit_code == 0, r.output
    assert "price a100-80gb $1.10/GPU-hour: reserved mycloud 2026-11 (mine.csv)" in r.output
    r = CliRunner().invoke(main, ["catalog", "prices", "--prices", str(f), "--gpu", "a100", "--json"])
    assert r.exit_code == 0, r.output
    assert {(x["provider"], x["kind"]) for x in __import__("json").loads(r.output)} == \
        {("mycloud", "on_demand"), ("mycloud", "reserved"), ("othercloud", "on_demand")}
    r = CliRunner().invoke(main, ["catalog", "prices", "--provider", "acme"])
    assert r.exit_code == 2 and "no offers listed from it" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("gpu,provider,kind,usd_per_gpu_hour,as_of\na100,x,reserved,9,2026-01\na100,x,on_demand,2,2026-01\n")
    r = CliRunner().invoke(main, ["recommend", "--trace", TRACE, "--gpu", "a100", "--prices", str(bad)])
    assert r.exit_code == 2 and "above its on-demand" in r.output and "Traceback" not in r.output


def test_gpu_spec_price_with_provider_and_date(tmp_path):
    from planner.catalog.gpu_spec import specs_and_prices
    y = tmp_path / "g.yaml"
    y.write_text("name: dated-accel\nmemory_gb: 96\nmemory_gb_s: 4000\nfp16_tflops: 800\n"
                 "usd_per_gpu_hour: 2.2\nprovider: AcmeCloud\nas_of: '2024-05'\n")
    _, own = specs_and_prices([y])
    usd, src = catalog.price_usd_per_gpu_hour("dated-accel", overrides=own)
    assert usd == 2.2 and src.startswith("on_demand acmecloud 2024-05 (g.yaml, cheapest listed); ") and "months old" in src
    y.write_text("name: dated-accel\nmemory_gb: 96\nmemory_gb_s: 4000\nfp16_tflops: 800\nusd_per_gpu_hour: 2.2\n"
                 "provider: AcmeCloud\n")
    with pytest.raises(InputError, match="give provider and as_of together"):
        specs_and_prices([y])
