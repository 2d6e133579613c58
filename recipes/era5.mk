# --- ERA5 2 m temperature over the UK (real GRIB): train on 1-24 March 2019, then cycle the generative
# model hour by hour over 25-31 March with 5% of the grid observed (error 0.5 K); its history is its own
# analyses. `make -C recipes era5-t2m ERA_EPOCHS=60` for the benchmark's full training; ERA_TEST
# shortens the cycled period (it must start on 2019-03-25T00:00, after the history in init.nc).
ERA := $(WORK)/era5
ERA_GRIB := $(DAFLOW_SAMPLE_DATA)/grib/era5-2mt-2019-03-uk.grib
ERA_EPOCHS ?= 20
ERA_MEMBERS ?= 8
ERA_HISTORY ?= 2
ERA_SAMPLE_STEPS ?= 10
ERA_TEST ?= 2019-03-25/2019-03-31T23:00

.PHONY: era5-t2m
era5-t2m: $(ERA)/summary.txt  ## ERA5 t2m (real GRIB): ingest, 5% observations, train the generative model, cycle it, score

$(ERA)/t2m.nc: $(ERA_GRIB)
	$(DAFLOW) ingest $< -o $@
$(ERA)/train.nc: $(ERA)/t2m.nc
	$(DAFLOW) ingest $< --time 2019-03-01/2019-03-24T23:00 -o $@
$(ERA)/test.nc: $(ERA)/t2m.nc
	$(DAFLOW) ingest $< --time $(ERA_TEST) -o $@
$(ERA)/init.nc: $(ERA)/t2m.nc
	$(DAFLOW) ingest $< --time 2019-03-24T$(shell printf %02d $$((24 - $(ERA_HISTORY)))):00/2019-03-24T23:00 -o $@
$(ERA)/obs.nc: $(ERA)/test.nc
	$(DAFLOW) ingest $< --observe --fraction 0.05 --pattern fixed --error-std 0.5 --seed 1 -o $@
$(ERA)/model/config.json: $(ERA)/train.nc
	$(DAFLOW) train --data $< --history $(ERA_HISTORY) --epochs $(ERA_EPOCHS) -o $(ERA)/model
$(ERA)/storm.nc: $(ERA)/model/config.json $(ERA)/init.nc $(ERA)/obs.nc
	$(DAFLOW) assimilate --method storm --checkpoint $(ERA)/model --init $(ERA)/init.nc --obs $(ERA)/obs.nc \
	  --members $(ERA_MEMBERS) --sample-steps $(ERA_SAMPLE_STEPS) --seed 1 -o $@
$(ERA)/storm.json: $(ERA)/storm.nc $(ERA)/test.nc $(ERA)/obs.nc
	$(DAFLOW) score --truth $(ERA)/test.nc --forecast $< --obs $(ERA)/obs.nc --plot $(ERA)/storm.png -o $(ERA)/storm-scores.nc --json > $@
$(ERA)/summary.txt: $(ERA)/storm.json
	$(PYTHON) $(RECIPES)summary.py "ERA5 t2m $(ERA_TEST), 5% observed (error 0.5 K), generative model cycled on its own analyses" $^ > $@
	@cat $@
