// Sorting of tables with class "sortable": click a header; cells sort by data-v (numbers) or text.
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var dir = th.dataset.dir === "desc" ? "asc" : "desc";
      table.querySelectorAll("thead th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir;
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = x === undefined || x === "" ? NaN : Number(x), ny = y === undefined || y === "" ? NaN : Number(y);
        var r;
        if (!isNaN(nx) || !isNaN(ny)) {  // missing values last, whatever the direction
          if (isNaN(nx)) return 1; if (isNaN(ny)) return -1; r = nx - ny;
        } else { r = a.cells[col].textContent.localeCompare(b.cells[col].textContent); }
        return dir === "asc" ? r : -r;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
