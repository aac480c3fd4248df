"""The web page served at ``/``: choose a model and an image, see the image with its boxes and the rows.

Plain HTML and JavaScript, no external resources: the image is POSTed as the raw body to
``/v1/models/{name}/detect`` and the answer drawn on a canvas (boxes in original-image pixels).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nanodet-infer</title>
<style>
 body { font-family: sans-serif; margin: 1.5em; }
 canvas { max-width: 100%; border: 1px solid #ccc; display: block; margin: 1em 0; }
 table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
 #status.error { color: #b00; }
</style>
</head>
<body>
<h1>nanodet-infer</h1>
<p>
 <label>Model <select id="model"></select></label>
 <label>Score threshold <input id="score" type="number" min="0" max="1" step="0.05" placeholder="default"></label>
 <input id="file" type="file" accept="image/jpeg,image/png,image/bmp,image/webp">
</p>
<p id="status">Choose an image.</p>
<canvas id="canvas" width="0" height="0"></canvas>
<table id="rows"><thead><tr><th>#</th><th>class</th><th>score</th><th>x1</th><th>y1</th><th>x2</th><th>y2</th></tr>
</thead><tbody></tbody></table>
<script>
const select = document.getElementById("model");
const status = document.getElementById("status");
const colors = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"];

fetch("/v1/models").then(r => r.json()).then(answer => {
  for (const m of answer.models) {
    const option = document.createElement("option");
    option.value = m.name; option.textContent = m.name; select.appendChild(option);
  }
});

function show(bitmap, answer) {
  const canvas = document.getElementById("canvas");
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  ctx.lineWidth = Math.max(2, bitmap.width / 300);
  ctx.font = Math.max(12, bitmap.width / 50) + "px sans-serif";
  const body = document.querySelector("#rows tbody");
  body.replaceChildren();
  answer.detections.forEach((d, i) => {
    const [x1, y1, x2, y2] = d.bbox;
    const color = colors[d.class_id % colors.length];
    ctx.strokeStyle = color; ctx.fillStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillText(d.class_name + " " + d.score.toFixed(2), x1 + 2, Math.max(12, y1 - 3));
    const row = body.insertRow();
    row.className = "detection";
    for (const v of [i, d.class_name, d.score.toFixed(3), x1.toFixed(1), y1.toFixed(1), x2.toFixed(1), y2.toFixed(1)]) {
      row.insertCell().textContent = v;
    }
  });
  status.className = "done";
  status.textContent = answer.detections.length + " detections in " + answer.timings_ms.request.toFixed(1) + " ms";
}

document.getElementById("file").addEventListener("change", async event => {
  const file = event.target.files[0];
  if (!file) return;
  status.className = ""; status.textContent = "Detecting...";
  const score = document.getElementById("score").value;
  const query = score ? "?score_threshold=" + encodeURIComponent(score) : "";
  try {
    const response = await fetch("/v1/models/" + encodeURIComponent(select.value) + "/detect" + query,
                                 {method: "POST", body: file, headers: {"Content-Type": "application/octet-stream"}});
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error);
    show(await createImageBitmap(file, {imageOrientation: "from-image"}), answer);
  } catch (error) {
    status.className = "error"; status.textContent = "Error: " + error.message;
  }
});
</script>
</body>
</html>
"""
