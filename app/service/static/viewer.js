// The job page's slice viewer: the CT with the SUV fused over it and the lesion masks, drawn by Niivue
// (the vendored /static/niivue/niivue.umd.js). The volumes come from the service's own /jobs/{id}/viewer/ routes;
// the page's <section id="viewer"> names them and the masks' colours in data- attributes.
(function () {
  "use strict";

  const CT_WINDOW = [-160, 240]; // soft tissue: level 40 HU, width 400 HU
  const SUV_WINDOW = [0, 10];

  const section = document.getElementById("viewer");
  if (!section) return;
  const canvas = document.getElementById("viewer-canvas");
  const status = document.getElementById("viewer-status");
  const readout = document.getElementById("viewer-values");
  const viewSelect = document.getElementById("viewer-view");
  const opacity = document.getElementById("viewer-opacity");
  const showMasks = document.getElementById("viewer-masks");
  const labels = JSON.parse(section.dataset.labels);

  for (const swatch of section.querySelectorAll(".swatch[data-rgb]")) {
    swatch.style.borderLeftColor = `rgb(${swatch.dataset.rgb})`;
  }

  function say(text) {
    status.textContent = text;
  }

  if (!window.niivue || !window.WebGL2RenderingContext) {
    say("This browser cannot show the slice viewer (it needs WebGL 2); the MIP below shows the study.");
    return;
  }

  // Label value -> colour and name, for Niivue's discrete colour map (value 0, background, transparent).
  function labelColormap() {
    const map = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
    for (const label of labels) {
      map.R.push(label.rgb[0]);
      map.G.push(label.rgb[1]);
      map.B.push(label.rgb[2]);
      map.A.push(255);
      map.I.push(label.value);
      map.labels.push(label.name);
    }
    return map;
  }

  const nv = new niivue.Niivue({
    backColor: [0, 0, 0, 1],
    crosshairColor: [1, 0.85, 0, 0.8],
    crosshairWidth: 0.5, // half a voxel: the default, one, hides small lesions on coarse PET grids
    dragAndDropEnabled: false,
    show3Dcrosshair: false,
    isColorbar: false,
    multiplanarShowRender: 0, // never: three slices, no 3D render
    loadingText: "loading the study", // ASCII: the viewer's font has no ellipsis
  });

  const VIEWS = {
    multiplanar: [nv.sliceTypeMultiplanar, [0, 0, 1]],
    axial: [nv.sliceTypeAxial, [0, 0, 1]],
    coronal: [nv.sliceTypeCoronal, [0, 1, 0]],
    sagittal: [nv.sliceTypeSagittal, [1, 0, 0]],
  };

  function format(value, digits) {
    return Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function valuesAt(mm) {
    const [ct, suv, mask] = nv.volumes;
    const at = (volume) => {
      const vox = volume.mm2vox(mm);
      const inside = vox.every((v, i) => v >= 0 && v < volume.dimsRAS[i + 1]);
      return inside ? volume.getValue(vox[0], vox[1], vox[2]) : NaN;
    };
    const parts = [`SUV ${format(at(suv), 2)}`, `CT ${format(at(ct), 0)} HU`];
    const label = mask ? labels.find((l) => l.value === Math.round(at(mask))) : undefined;
    if (label) parts.push(label.name);
    return parts.join(" · ");
  }

  function showValuesUnderMouse(event) {
    if (nv.volumes.length < 2) return;
    const box = canvas.getBoundingClientRect();
    const dpr = nv.uiData.dpr || 1;
    const frac = nv.canvasPos2frac([(event.clientX - box.left) * dpr, (event.clientY - box.top) * dpr]);
    if (frac[0] < 0) return; // outside every slice
    readout.textContent = valuesAt(nv.frac2mm(frac));
  }

  function moveSlice(step) {
    const direction = VIEWS[viewSelect.value][1];
    nv.moveCrosshairInVox(direction[0] * step, direction[1] * step, direction[2] * step);
  }

  async function start() {
    await nv.attachToCanvas(canvas);
    const volumes = [
      { url: section.dataset.ct, name: "ct.nii.gz", colormap: "gray", cal_min: CT_WINDOW[0], cal_max: CT_WINDOW[1] },
      { url: section.dataset.suv, name: "suv.nii.gz", colormap: "hot", cal_min: SUV_WINDOW[0],
        cal_max: SUV_WINDOW[1], opacity: opacity.value / 100 },
    ];
    if (section.dataset.mask) volumes.push({ url: section.dataset.mask, name: "masks.nii.gz", opacity: 0.8 });
    await nv.loadVolumes(volumes);
    if (nv.volumes.length > 2) {
      nv.volumes[2].setColormapLabel(labelColormap());
      nv.updateGLVolume();
    }
    nv.onLocationChange = (location) => {
      readout.textContent = valuesAt(location.mm);
    };
    nv.setSliceType(VIEWS[viewSelect.value][0]);
    readout.textContent = valuesAt(nv.frac2mm(nv.scene.crosshairPos));
    section.dataset.ready = "true";
    say("");
  }

  viewSelect.addEventListener("change", () => nv.setSliceType(VIEWS[viewSelect.value][0]));
  opacity.addEventListener("input", () => nv.setOpacity(1, opacity.value / 100));
  showMasks.addEventListener("change", () => {
    if (nv.volumes.length > 2) nv.setOpacity(2, showMasks.checked ? 0.8 : 0);
  });
  document.getElementById("viewer-previous").addEventListener("click", () => moveSlice(-1));
  document.getElementById("viewer-next").addEventListener("click", () => moveSlice(1));
  canvas.addEventListener("mousemove", showValuesUnderMouse);

  start().catch((error) => {
    section.dataset.ready = "failed";
    say(`The study could not be shown: ${error.message || error}`);
  });
})();
