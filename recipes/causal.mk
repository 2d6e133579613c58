# --- ENSO causal drivers: Nino3.4 from WWV, western-Pacific zonal wind, SOI and its own past (lags 1-12 months)
ENSO := $(WORK)/enso
ENSO_DATA := $(DAFLOW_SAMPLE_DATA)/enso

.PHONY: enso-causal
enso-causal: $(ENSO)/causal.txt  ## ENSO: drivers of Nino3.4 on the real index files (plot and table)

$(ENSO)/xro.nc:
	@mkdir -p $(@D)
	$(DAFLOW) ingest $(ENSO_DATA)/XRO_indices_oras5.nc --var Nino34 --var WWV -o $@
$(ENSO)/u10.nc:
	@mkdir -p $(@D)
	$(DAFLOW) ingest $(ENSO_DATA)/iera5_u10m_160-180E_5--5N_n.dat --name u10 -o $@
$(ENSO)/soi.nc:
	@mkdir -p $(@D)
	$(DAFLOW) ingest $(ENSO_DATA)/soi.long.csv -o $@
$(ENSO)/causal.json: $(ENSO)/xro.nc $(ENSO)/u10.nc $(ENSO)/soi.nc
	$(DAFLOW) causal $^ --target Nino34 --drivers WWV,u10,SOI,Nino34 --lags 1-12 --surrogates 200 \
	  --plot $(ENSO)/causal.png --json -o $(ENSO)/causal.nc > $@.tmp && mv $@.tmp $@
$(ENSO)/causal.txt: $(ENSO)/causal.json
	$(PYTHON) -c "import json,sys; c=json.load(open(sys.argv[1])); \
	print('driver  lag  information(nats)  p_value  parent'); \
	[print(f\"{l['driver']:7s} {l['lag']:3d}  {l['unique']:17.4f}  {l['p_value']:7.3f}  {'*' if l['selected'] else ''}\") for l in c['links']]; \
	print(f\"total {c['total_information']:.4f} nats, interaction {c['interaction']:.4f}, certainty {c['certainty']:.3f}, unknown share {c['unknown_share']:.3f}\")" $< > $@.tmp && mv $@.tmp $@
	cat $@
