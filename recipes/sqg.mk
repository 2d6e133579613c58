# --- SQG OSSE (the EnSF papers' testbed): a 12-hourly nature run, a fixed 25% observing mask (error 1 K,
# same points on both lids), a 20-member ensemble from climatology (random spun-up states, not the
# truth), EnSF with and without biharmonic inpainting, and LETKF (radius 4 grid points, RTPS 0.5; not
# tuned), scored on observed and unobserved points after SQG_BURN cycles.
SQG := $(WORK)/sqg
SQG_CYCLES ?= 100
SQG_BURN ?= 40
SQG_FRACTION ?= 0.25
SQG_SPINUP ?= 7200
SQG_RUNS := ensf ensf-noinpaint letkf

.PHONY: sqg-osse
sqg-osse: $(SQG)/summary.txt  ## SQG OSSE: nature run, 25% fixed mask, EnSF with/without inpainting and LETKF, scores, plots

$(SQG)/truth.nc:
	$(DAFLOW) forecast --model sqg --init random --spinup $(SQG_SPINUP) --steps $$(($(SQG_CYCLES) * 36)) --output-every 36 --seed 31 -o $@
$(SQG)/obs.nc: $(SQG)/truth.nc
	$(DAFLOW) ingest $< --observe --fraction $(SQG_FRACTION) --pattern fixed --error-std 1.0 --seed 32 -o $@
$(SQG)/ens.nc:
	$(DAFLOW) forecast --model sqg --init random --members 20 --spinup $(SQG_SPINUP) --seed 33 -o $@
$(SQG)/ensf.nc: $(SQG)/ens.nc $(SQG)/obs.nc
	$(DAFLOW) assimilate --method ensf --inpaint biharmonic --init $< --obs $(SQG)/obs.nc --seed 1 -o $@
$(SQG)/ensf-noinpaint.nc: $(SQG)/ens.nc $(SQG)/obs.nc
	$(DAFLOW) assimilate --method ensf --inpaint none --init $< --obs $(SQG)/obs.nc --seed 1 -o $@
$(SQG)/letkf.nc: $(SQG)/ens.nc $(SQG)/obs.nc
	$(DAFLOW) assimilate --method letkf --loc-radius 4 --rtps 0.5 --init $< --obs $(SQG)/obs.nc -o $@
$(SQG)/%.json: $(SQG)/%.nc $(SQG)/truth.nc $(SQG)/obs.nc
	$(DAFLOW) score --truth $(SQG)/truth.nc --forecast $< --obs $(SQG)/obs.nc --burn-in $(SQG_BURN) --plot $(SQG)/$*.png \
	  -o $(SQG)/$*-scores.nc --json > $@
$(SQG)/summary.txt: $(foreach r,$(SQG_RUNS),$(SQG)/$(r).json)
	$(PYTHON) $(RECIPES)summary.py "SQG 64 x 64, $(SQG_CYCLES) 12-hourly cycles, $(SQG_FRACTION) of the grid observed (error 1 K), burn-in $(SQG_BURN)" $^ > $@
	@cat $@
